//! Pod metadata from the Kubernetes API: which pod, namespace, container and workload a
//! traced process belongs to, so that its spans and metrics carry `k8s.*` attributes and a
//! `service.name` a person would recognise.
//!
//! The cgroup path already says which pod (uid) and container (id) a process runs in
//! (see `resource::container_attributes`); the API turns those ids into names. A
//! background task on the export runtime lists this node's pods (one request,
//! `fieldSelector=spec.nodeName=…`) every [`RESYNC`], every [`PENDING_RESYNC`] while a
//! traced process waits for its pod or container, and on demand when a process of a pod
//! it has not seen yet is attached.
//!
//! The event thread reads the cache; it waits for the API in one case only: the first
//! process of an unknown pod, while the API answers, waits up to [`ATTACH_WAIT`] for the
//! list it asked for (once per pod), so that its resource — which the metrics keep for the
//! process's lifetime — has the pod's names and service name from the start. The pod
//! object exists before its containers start, so that list nearly always has it. When it
//! does not (the container's id is posted by the kubelet a moment after the container
//! starts), the process is remembered as pending, and its resource is rebuilt as soon as a
//! refresh brings the rest (`conn::Tracker::refresh_resources`; spans only, see there). A
//! down API server costs one warning line and retries with backoff; nothing waits for it.
//!
//! Split: [`client`] knows where the API is and how to ask it, [`pod`] what a pod object
//! means for a resource (pure, tested on a real pod list), this file the cache between
//! them and the task that fills it.
//!
//! The cache is process-wide ([`installed`]): a node has one set of pods, and the resource
//! code (`Resource::for_process`) reaches it without every caller handing it through.

pub mod client;
pub mod pod;

use std::{
    collections::HashMap,
    sync::{
        Arc, Condvar, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

pub use client::{KubeConfig, KubeConfigError, KubeError, KubeFlags, Mode};
pub use pod::PodMeta;

/// Time between two pod lists when nothing waits.
pub const RESYNC: Duration = Duration::from_secs(30);
/// Time between two pod lists while a traced process waits for its pod's metadata.
pub const PENDING_RESYNC: Duration = Duration::from_secs(2);
/// A process waits this long for its pod to appear in a list, then is given up on.
pub const PENDING_TTL: Duration = Duration::from_secs(300);
/// Processes waiting at once; beyond it new ones do not wait (their next resource
/// rebuild, e.g. after exec, tries again).
pub const MAX_PENDING: usize = 4096;
/// How long startup waits for the first list before attaching the first processes.
pub const STARTUP_WAIT: Duration = Duration::from_secs(2);
/// How long attaching the first process of an unknown pod waits for a fresh list (only
/// while the API answers, once per pod).
pub const ATTACH_WAIT: Duration = Duration::from_secs(1);
/// Least time between the starts of two lists, however many processes ask for one.
pub const MIN_LIST_INTERVAL: Duration = Duration::from_millis(500);
/// Pod uids remembered as already waited for (then forgotten all at once).
const MAX_WAITED: usize = 4096;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A process in a known pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub pod: Arc<PodMeta>,
    /// The container's name, when the pod's status lists the process's container id.
    pub container: Option<String>,
    /// Whether `service.name` may come from the well-known labels.
    pub well_known_labels: bool,
}

/// A process whose pod (or container) was not in the last list.
struct Pending {
    uid: String,
    container_id: Option<String>,
    since: Instant,
}

#[derive(Default)]
struct State {
    pods: HashMap<String, Arc<PodMeta>>,
    /// Container id -> pod uid.
    by_container: HashMap<String, String>,
    /// List attempts that ended (either way).
    generation: u64,
    /// The last attempt succeeded.
    healthy: bool,
    /// Pods whose first process already waited for a list.
    waited: std::collections::HashSet<String>,
    /// When the last successful list was asked for.
    last_list_started: Option<Instant>,
    pending: HashMap<u32, Pending>,
    /// Pending processes whose metadata arrived, for the event thread to pick up.
    resolved: Vec<u32>,
}

impl State {
    fn view(&self, uid: &str, container_id: Option<&str>) -> Option<(Arc<PodMeta>, bool)> {
        let pod = self.pods.get(uid)?;
        let complete = container_id.is_none_or(|c| pod.container_name(c).is_some());
        Some((pod.clone(), complete))
    }
}

/// The cache of this node's pods, shared by the refresh task and the event thread.
pub struct Metadata {
    state: Mutex<State>,
    /// Signalled when a list attempt ends.
    listed: Condvar,
    /// Set when `resolved` is not empty: the event thread checks this, not the lock.
    has_resolved: AtomicBool,
    wake: tokio::sync::Notify,
    well_known_labels: bool,
    /// [`ATTACH_WAIT`] (shorter in tests).
    attach_wait: Duration,
}

impl Metadata {
    pub fn new(well_known_labels: bool) -> Metadata {
        Metadata {
            state: Mutex::new(State::default()),
            listed: Condvar::new(),
            has_resolved: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            well_known_labels,
            attach_wait: ATTACH_WAIT,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pod of process `pid`, from the ids its cgroup path holds.
    ///
    /// The first process of a pod not in the cache waits up to [`ATTACH_WAIT`] for a
    /// fresh list — only while the API answers, once per pod, and only when the process
    /// is younger than the last list (`process_age`; an older one's pod should have been
    /// in it, so waiting would not help: a wrong node name must not cost a second per
    /// pod). When the pod, or the container within it, is still not known, `pid` is
    /// remembered and a refresh is asked for; [`Metadata::take_resolved`] names it once
    /// the answer is in.
    pub fn lookup(
        &self,
        pid: u32,
        pod_uid: Option<&str>,
        container_id: Option<&str>,
        process_age: Option<Duration>,
    ) -> Option<PodView> {
        let mut st = self.lock();
        let uid = match (pod_uid, container_id) {
            (Some(uid), _) => uid.to_owned(),
            (None, Some(c)) => st.by_container.get(c)?.clone(),
            // Not in a pod (a host process, or a container outside Kubernetes).
            (None, None) => return None,
        };
        let newer_than_list = match (process_age, st.last_list_started) {
            (Some(age), Some(listed)) => age < listed.elapsed(),
            _ => true,
        };
        let wait = self.attach_wait;
        if !st.pods.contains_key(&uid)
            && st.healthy
            && newer_than_list
            && !wait.is_zero()
            && !st.waited.contains(&uid)
        {
            if st.waited.len() >= MAX_WAITED {
                st.waited.clear();
            }
            st.waited.insert(uid.clone());
            let since = st.generation;
            self.wake.notify_one();
            // Two generations: the list running now may have started before the pod was
            // created; the next one starts after this request.
            st = self
                .listed
                .wait_timeout_while(st, wait, |s| {
                    !s.pods.contains_key(&uid) && s.generation < since + 2 && s.healthy
                })
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let found = st.view(&uid, container_id);
        if !found.as_ref().is_some_and(|(_, complete)| *complete) {
            let room = st.pending.len() < MAX_PENDING || st.pending.contains_key(&pid);
            if room {
                st.pending.entry(pid).or_insert_with(|| Pending {
                    uid: uid.clone(),
                    container_id: container_id.map(str::to_owned),
                    since: Instant::now(),
                });
                self.wake.notify_one();
            }
        }
        let (pod, _) = found?;
        let container = container_id
            .and_then(|c| pod.container_name(c))
            .map(str::to_owned);
        Some(PodView {
            pod,
            container,
            well_known_labels: self.well_known_labels,
        })
    }

    /// Replaces the cache with a fresh list, asked for at `started`; pending processes
    /// whose pod and container are in it become resolved, those waiting longer than
    /// [`PENDING_TTL`] are dropped.
    pub fn replace(&self, pods: Vec<PodMeta>, started: Instant) {
        let mut pods_by_uid = HashMap::with_capacity(pods.len());
        let mut by_container = HashMap::new();
        for p in pods {
            for (id, _) in &p.containers {
                by_container.insert(id.clone(), p.uid.clone());
            }
            pods_by_uid.insert(p.uid.clone(), Arc::new(p));
        }
        let mut st = self.lock();
        st.pods = pods_by_uid;
        st.by_container = by_container;
        st.healthy = true;
        st.generation += 1;
        st.last_list_started = Some(started);
        let now = Instant::now();
        let mut done = Vec::new();
        for (&pid, p) in &st.pending {
            if st
                .view(&p.uid, p.container_id.as_deref())
                .is_some_and(|(_, complete)| complete)
            {
                done.push(pid);
            }
        }
        for pid in &done {
            st.pending.remove(pid);
        }
        st.pending
            .retain(|_, p| now.duration_since(p.since) < PENDING_TTL);
        if !done.is_empty() {
            st.resolved.extend(done);
            self.has_resolved.store(true, Ordering::Release);
        }
        drop(st);
        self.listed.notify_all();
    }

    /// A list attempt failed: nothing waits for the API until one succeeds.
    pub fn list_failed(&self) {
        let mut st = self.lock();
        st.healthy = false;
        st.generation += 1;
        drop(st);
        self.listed.notify_all();
    }

    /// Processes whose pod metadata arrived since the last call (their resource should be
    /// rebuilt). One atomic load when there are none.
    pub fn take_resolved(&self) -> Vec<u32> {
        if !self.has_resolved.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut self.lock().resolved)
    }

    fn has_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// Waits (at most `timeout`) until the first list attempt ended; true when it did.
    pub fn wait_first_attempt(&self, timeout: Duration) -> bool {
        let st = self.lock();
        let (st, _) = self
            .listed
            .wait_timeout_while(st, timeout, |s| s.generation == 0)
            .unwrap_or_else(|e| e.into_inner());
        st.generation > 0
    }

    /// Pods in the cache.
    pub fn pod_count(&self) -> usize {
        self.lock().pods.len()
    }
}

static INSTALLED: OnceLock<Arc<Metadata>> = OnceLock::new();

/// The agent's pod metadata, once [`start`] ran with metadata on.
pub fn installed() -> Option<&'static Arc<Metadata>> {
    INSTALLED.get()
}

/// [`Metadata::take_resolved`] of the installed cache (nothing when metadata is off).
pub fn take_resolved() -> Vec<u32> {
    installed().map(|m| m.take_resolved()).unwrap_or_default()
}

/// Why metadata could not be started. One line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] KubeConfigError),
    #[error("Kubernetes API: {0}")]
    Client(#[from] KubeError),
}

/// Resolves the `--kube-*` flags against the environment and, when metadata is on,
/// installs the cache and starts refreshing it on `rt`. With `--kube-metadata auto`, a
/// setting that cannot work (no node name, no CA bundle) is one warning and metadata
/// stays off; with `on` it is an error.
pub fn start(
    flags: &KubeFlags,
    rt: &tokio::runtime::Handle,
) -> Result<Option<Arc<Metadata>>, StartError> {
    let explicit = flags.mode == Some(Mode::On);
    let started = KubeConfig::resolve(flags, |k| std::env::var(k).ok(), |p| p.exists())
        .map_err(StartError::from)
        .and_then(|cfg| match cfg {
            Some(cfg) => Ok(Some(client::Client::new(cfg)?)),
            None => Ok(None),
        });
    let client = match started {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(None),
        Err(e) if explicit => return Err(e),
        Err(e) => {
            tracing::warn!("Kubernetes metadata off: {e}");
            return Ok(None);
        }
    };
    let meta = INSTALLED
        .get_or_init(|| Arc::new(Metadata::new(client.config().well_known_labels)))
        .clone();
    rt.spawn(refresh_loop(client, meta.clone()));
    Ok(Some(meta))
}

/// `d` +/- 20 %, so that the agents of a cluster do not retry in step.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * fastrand::f64())
}

async fn refresh_loop(client: client::Client, meta: Arc<Metadata>) {
    let node = client.config().node_name.clone();
    let mut backoff = BACKOFF_MIN;
    let mut failing = false;
    let mut first = true;
    loop {
        let started = tokio::time::Instant::now();
        match client.list_pods().await {
            Ok(pods) => {
                let n = pods.len();
                meta.replace(pods, started.into_std());
                if failing {
                    tracing::info!("Kubernetes API reachable again: {n} pods on node {node}");
                } else if first {
                    tracing::info!("Kubernetes metadata: {n} pods on node {node}");
                }
                failing = false;
                first = false;
                backoff = BACKOFF_MIN;
            }
            Err(e) => {
                meta.list_failed();
                if !failing {
                    tracing::warn!(
                        "Kubernetes pod metadata unavailable (spans go out without it; retrying with backoff up to {}s): {e}",
                        BACKOFF_MAX.as_secs()
                    );
                } else {
                    tracing::debug!("Kubernetes API still unavailable: {e}");
                }
                failing = true;
                first = false;
                tokio::time::sleep(jittered(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        }
        let next = if meta.has_pending() {
            PENDING_RESYNC
        } else {
            RESYNC
        };
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = meta.wake.notified() => {
                tokio::time::sleep_until(started + MIN_LIST_INTERVAL).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
    const UID: &str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";

    fn pod(containers: &[(&str, &str)]) -> PodMeta {
        PodMeta {
            uid: UID.into(),
            name: "web-1".into(),
            namespace: "shop".into(),
            containers: containers
                .iter()
                .map(|(i, n)| (i.to_string(), n.to_string()))
                .collect(),
            ..PodMeta::default()
        }
    }

    /// A cache whose lists are done by hand; lookups never wait unless asked.
    fn meta(attach_wait: Duration) -> Metadata {
        Metadata {
            attach_wait,
            ..Metadata::new(false)
        }
    }

    #[test]
    fn misses_become_pending_and_resolve_when_a_list_brings_them() {
        let m = meta(Duration::ZERO);
        let now = Instant::now;
        // Not a pod: nothing remembered.
        assert_eq!(m.lookup(1, None, None, None), None);
        assert_eq!(m.lookup(1, None, Some(CID), None), None);
        assert!(!m.has_pending());
        // Unknown pod: pending.
        assert_eq!(m.lookup(7, Some(UID), Some(CID), None), None);
        assert!(m.has_pending());
        assert!(m.take_resolved().is_empty());
        // The pod arrives, its container status not yet: still pending, partial view.
        m.replace(vec![pod(&[])], now());
        assert!(m.take_resolved().is_empty());
        let v = m.lookup(7, Some(UID), Some(CID), None).unwrap();
        assert_eq!((v.pod.name.as_str(), v.container), ("web-1", None));
        // The container status arrives: resolved once.
        m.replace(vec![pod(&[(CID, "app")])], now());
        assert_eq!(m.take_resolved(), vec![7]);
        assert!(m.take_resolved().is_empty());
        assert!(!m.has_pending());
        let v = m.lookup(7, Some(UID), Some(CID), None).unwrap();
        assert_eq!(v.container.as_deref(), Some("app"));
        // Found by container id alone too.
        let v = m.lookup(8, None, Some(CID), None).unwrap();
        assert_eq!(v.pod.uid, UID);
        assert!(!m.has_pending());
        assert_eq!(m.pod_count(), 1);
    }

    #[test]
    fn pending_is_bounded() {
        let m = meta(Duration::ZERO);
        for pid in 0..(MAX_PENDING as u32 + 10) {
            m.lookup(pid, Some("unknown"), None, None);
        }
        assert_eq!(m.lock().pending.len(), MAX_PENDING);
        m.replace(vec![], Instant::now());
        assert_eq!(m.lock().pending.len(), MAX_PENDING, "kept until the TTL");
    }

    #[test]
    fn first_attempt_wait_is_bounded() {
        let m = meta(Duration::ZERO);
        let t = Instant::now();
        assert!(!m.wait_first_attempt(Duration::from_millis(50)));
        assert!(t.elapsed() >= Duration::from_millis(50));
        m.list_failed();
        assert!(m.wait_first_attempt(Duration::from_secs(5)));
    }

    #[test]
    fn a_new_pods_first_process_waits_for_the_list_it_asks_for() {
        let m = Arc::new(meta(Duration::from_secs(10)));
        m.replace(vec![], Instant::now());
        // The refresh task: answers the wake-up with a list holding the pod.
        let lister = {
            let m = m.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(m.wake.notified());
                m.replace(vec![pod(&[(CID, "app")])], Instant::now());
            })
        };
        let t = Instant::now();
        let v = m
            .lookup(7, Some(UID), Some(CID), Some(Duration::ZERO))
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(v.container.as_deref(), Some("app"));
        lister.join().unwrap();
        assert!(!m.has_pending());
    }

    #[test]
    fn waits_are_bounded_once_per_pod_and_never_while_the_api_fails() {
        let wait = Duration::from_millis(100);
        let m = meta(wait);
        m.replace(vec![], Instant::now());
        let young = Some(Duration::ZERO);
        let t = Instant::now();
        assert_eq!(m.lookup(7, Some(UID), None, young), None);
        assert!(t.elapsed() >= wait, "waited for a list that never came");
        // Same pod again: no second wait.
        let t = Instant::now();
        assert_eq!(m.lookup(8, Some(UID), None, young), None);
        assert!(t.elapsed() < wait);
        // Older than the last list: its pod would have been in it.
        let t = Instant::now();
        m.lookup(9, Some("other-pod"), None, Some(Duration::from_secs(3600)));
        assert!(t.elapsed() < wait);
        // API down: nothing waits.
        m.list_failed();
        let t = Instant::now();
        m.lookup(10, Some("third-pod"), None, young);
        assert!(t.elapsed() < wait);
        // Every miss is pending all the same.
        assert_eq!(m.lock().pending.len(), 4);
    }
}
