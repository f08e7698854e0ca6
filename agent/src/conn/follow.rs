//! Sockets followed wherever they go inside a process: one connection can have several
//! fds (dup, dup2, dup3, fcntl F_DUPFD; inetd-style servers read fd 0 and write fd 1),
//! and a process can use a socket it never accepted or connected (inherited over fork,
//! received over SCM_RIGHTS) — the kernel then "adopts" it on first use.
//!
//! A connection's state lives under one fd, its primary; the others are aliases that
//! resolve to it. Adopted sockets carry their inode, so two fds of one socket found
//! separately (fds 0 and 1 inherited by a forked child) still end up as one connection.
//! Kept apart from `mod.rs` so the pairing code does not need to know about any of it:
//! it only sees primary fds.

use foldhash::HashMap;
use std::net::SocketAddr;

use periscope_common::{ConnAdoptEvent, ConnDupEvent, GoConnEvent};

use super::{
    Conn, Endpoints, MAX_CONNS, Role, Tracker, local_addr, monotonic_ns, peer_addr, procnet,
};
use crate::span::Span;

/// Most aliases and adopted-socket inodes remembered (each map).
const MAX_ALIASES: usize = 65_536;
/// How long a network namespace's listening sockets are reused before re-reading them.
const LISTENERS_TTL_NS: u64 = 1_000_000_000;
/// A port not among the cached listeners re-reads them, at most this often.
const LISTENERS_RETRY_NS: u64 = 50_000_000;

#[derive(Default)]
pub(super) struct Aliases {
    /// (pid, fd) -> the primary fd whose connection this fd also names.
    to_primary: HashMap<(u32, u32), u32>,
    /// (pid, socket inode) -> primary fd of an adopted socket.
    by_inode: HashMap<(u32, u64), u32>,
    /// (pid, primary fd) -> inode, to forget `by_inode` when the primary goes.
    inode_of: HashMap<(u32, u32), u64>,
    /// Aliases or inodes not remembered because the maps were full.
    pub(super) over_limit: u64,
    /// Forked child -> parent, to read procfs through the parent when the child is gone.
    parent: HashMap<u32, u32>,
    /// Network namespace -> (when read, its listening sockets).
    listeners: HashMap<u64, (u64, Vec<SocketAddr>)>,
}

impl Aliases {
    /// The fd whose connection `fd` names.
    pub(super) fn resolve(&self, pid: u32, fd: u32) -> u32 {
        if self.to_primary.is_empty() {
            return fd;
        }
        self.to_primary.get(&(pid, fd)).copied().unwrap_or(fd)
    }

    fn forget_inode(&mut self, pid: u32, primary: u32) {
        if let Some(inode) = self.inode_of.remove(&(pid, primary)) {
            self.by_inode.remove(&(pid, inode));
        }
    }
}

impl Tracker {
    /// Remembers a fork's parent (see [`Aliases::parent`]).
    pub(super) fn note_fork(&mut self, pid: u32, parent: u32) {
        if self.aliases.parent.len() < MAX_ALIASES {
            self.aliases.parent.insert(pid, parent);
        }
    }

    /// Which side of an adopted TCP socket the process is on: a socket whose local
    /// address is one its namespace listens on was accepted, so it is served — from its
    /// first byte, as inetd-style servers and SCM_RIGHTS hand-offs get it. Otherwise the
    /// first bytes decide (`classify`).
    fn adopted_role(&mut self, pid: u32, local: Option<SocketAddr>) -> Role {
        let Some(local) = local else {
            return Role::Unknown;
        };
        let Some(netns) = self.procs.get(&pid).and_then(|p| p.netns) else {
            return Role::Unknown;
        };
        let listens = |l: &[SocketAddr]| {
            l.iter().any(|a| {
                a.port() == local.port() && (a.ip().is_unspecified() || a.ip() == local.ip())
            })
        };
        let now = monotonic_ns();
        if let Some((at, l)) = self.aliases.listeners.get(&netns) {
            let age = now.saturating_sub(*at);
            if listens(l) && age < LISTENERS_TTL_NS {
                return Role::Server;
            }
            if age < LISTENERS_RETRY_NS {
                return Role::Unknown;
            }
        }
        // The child may be gone already: its parent shares the namespace.
        let mut l = procnet::listening(pid);
        if l.is_empty()
            && let Some(&parent) = self.aliases.parent.get(&pid)
        {
            l = procnet::listening(parent);
        }
        let server = listens(&l);
        if self.aliases.listeners.len() > 1024 {
            self.aliases.listeners.clear();
        }
        self.aliases.listeners.insert(netns, (now, l));
        if server { Role::Server } else { Role::Unknown }
    }

    /// A new socket took `fd` (accept/connect): whatever the number named before is gone.
    pub(super) fn fd_reused(&mut self, pid: u32, fd: u32) {
        self.aliases.to_primary.remove(&(pid, fd));
        self.aliases.forget_inode(pid, fd);
    }

    /// A socket the process did not open while traced, found on first use.
    pub(super) fn adopt(&mut self, ev: &ConnAdoptEvent, sink: &mut dyn FnMut(Span)) {
        let open = &ev.open;
        let (pid, fd) = (open.header.tgid(), open.fd);
        // The kernel only adopts fds it does not track: anything we knew under this
        // number was closed without our seeing it (exec's close-on-exec, a missed close).
        self.close_fd(pid, fd, open.header.ts_ns, sink);
        if let Some(&primary) = self.aliases.by_inode.get(&(pid, ev.inode))
            && self.conns.contains_key(&(pid, primary))
        {
            self.alias(pid, fd, primary);
            return;
        }
        if self.conns.len() >= MAX_CONNS {
            self.stats.conns_over_limit += 1;
            return;
        }
        self.stats.conns_opened += 1;
        self.stats.conns_adopted += 1;
        let ends = Endpoints {
            local: local_addr(open),
            peer: peer_addr(open),
            tls: false,
        };
        let role = self.adopted_role(pid, ends.local);
        self.conns
            .insert((pid, fd), Box::new(Conn::new(role, ends)));
        if ev.inode != 0 && self.aliases.by_inode.len() < MAX_ALIASES {
            self.aliases.by_inode.insert((pid, ev.inode), fd);
            self.aliases.inode_of.insert((pid, fd), ev.inode);
        }
    }

    /// `new_fd` now names the same socket as `fd`; what it named before was closed.
    pub(super) fn dup(&mut self, ev: &ConnDupEvent, sink: &mut dyn FnMut(Span)) {
        let pid = ev.header.tgid();
        self.close_fd(pid, ev.new_fd, ev.header.ts_ns, sink);
        let primary = self.aliases.resolve(pid, ev.fd);
        self.stats.conns_duplicated += 1;
        self.alias(pid, ev.new_fd, primary);
    }

    fn alias(&mut self, pid: u32, fd: u32, primary: u32) {
        if fd == primary {
            return;
        }
        if self.aliases.to_primary.len() >= MAX_ALIASES {
            self.aliases.over_limit += 1;
            return;
        }
        self.aliases.to_primary.insert((pid, fd), primary);
    }

    /// The process closed `fd`. An alias just goes; a primary that still has aliases
    /// hands its connection to one of them; otherwise the connection ends.
    pub(super) fn close_fd(&mut self, pid: u32, fd: u32, ts_ns: u64, sink: &mut dyn FnMut(Span)) {
        if self.aliases.to_primary.remove(&(pid, fd)).is_some() {
            return;
        }
        let heir = self
            .aliases
            .to_primary
            .iter()
            .filter(|&(&(p, _), &to)| p == pid && to == fd)
            .map(|(&(_, a), _)| a)
            .min();
        let Some(heir) = heir else {
            self.aliases.forget_inode(pid, fd);
            self.close(pid, fd, ts_ns, sink);
            return;
        };
        self.aliases.to_primary.remove(&(pid, heir));
        for (&(p, _), to) in self.aliases.to_primary.iter_mut() {
            if p == pid && *to == fd {
                *to = heir;
            }
        }
        if let Some(inode) = self.aliases.inode_of.remove(&(pid, fd)) {
            self.aliases.inode_of.insert((pid, heir), inode);
            self.aliases.by_inode.insert((pid, inode), heir);
        }
        if let Some(conn) = self.conns.remove(&(pid, fd)) {
            self.unindex_client(pid, fd, &conn);
            let ends = conn.ends;
            let client = conn.role == Role::Client;
            self.conns.insert((pid, heir), conn);
            if client {
                self.index_client(pid, heir, &ends);
            }
        }
        for (&(p, _), a) in self.active.iter_mut() {
            if p == pid && a.fd == fd {
                a.fd = heir;
            }
        }
    }

    /// Every fd of `pid` that only names another's connection, forgotten (the process
    /// exited): returned so the caller can drop them from the kernel's socket map too.
    pub(super) fn forget_aliases(&mut self, pid: u32) -> Vec<u32> {
        let fds: Vec<u32> = self
            .aliases
            .to_primary
            .keys()
            .filter(|(p, _)| *p == pid)
            .map(|(_, fd)| *fd)
            .collect();
        self.aliases.to_primary.retain(|(p, _), _| *p != pid);
        self.aliases.by_inode.retain(|(p, _), _| *p != pid);
        self.aliases.inode_of.retain(|(p, _), _| *p != pid);
        self.aliases.parent.remove(&pid);
        fds
    }

    /// The first goroutine that read an accepted socket serves it (net/http runs a
    /// connection's handlers on the goroutine that reads its requests), whatever type
    /// wraps the net.Conn: a fallback for when `(*conn).serve`'s net.Conn could not be
    /// looked through.
    pub(super) fn go_socket_read(&mut self, ev: &GoConnEvent) {
        let pid = ev.header.tgid();
        let fd = self.aliases.resolve(pid, ev.fd);
        if let Some(c) = self.conns.get_mut(&(pid, fd))
            && c.role == Role::Server
            && c.go_server_goid.is_none()
        {
            c.go_server_goid = Some(ev.goid);
        }
    }
}
