// gotruth is a Go program that reports the truth about its own runtime and can
// be told to misbehave. The end-to-end tests compare what the agent says about
// it (goroutines, threads, GC cycles, goroutines per creation site, leak
// suspicion) with what the program says about itself. Stdlib only, built with
// every Go toolchain and link mode the tests use.
//
// Endpoints (HTTP/1.1 on -addr; every answer is JSON unless noted):
//
//	GET  /                 200 "ok" (text)
//	GET  /truth            what the runtime says, see truthReport
//	POST /leak?n=N         N goroutines that block forever, created at LEAK-SITE
//	POST /spike?n=N&ms=M   N goroutines that sleep M ms and exit, created at SPIKE-SITE
//	POST /churn?n=N        N goroutines that exit at once (CHURN-SITE); waits for all
//	POST /gc?n=N           runtime.GC() N times; NumGC before and after
//	POST /hold?n=N         N goroutines that block forever, created at PRELOAD-SITE
//	GET  /recurse?depth=N  recursion with a 256-byte array in every frame (the
//	                       stack grows and is copied several times); a checksum
//	POST /threadexit       one OS thread of the process exits (a goroutine that
//	                       ends locked to its thread takes the thread with it) while
//	                       the process lives on; {"tid": T, "exited": true}
//
// -preload N starts N blocked goroutines (PRELOAD-SITE) before it listens.
// It prints "listening on HOST:PORT" on stdout once the socket listens.
//
// The go statements of the creation sites are in functions that are never
// inlined, so that the runtime (and a tracer) attribute the goroutines to
// main.leakOne, main.spikeOne, main.churnOne and main.preloadOne at the
// marked lines.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// forever is never closed or sent on: goroutines receiving from it block
// until the process exits.
var forever = make(chan struct{})

// Live goroutines per site, kept by the goroutines themselves.
var leakLive, spikeLive, preloadLive atomic.Int64

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	preload := flag.Int("preload", 0, "blocked goroutines to start before listening")
	flag.Parse()

	for i := 0; i < *preload; i++ {
		preloadOne()
	}
	// All of them are running (blocked) before the address is printed.
	for preloadLive.Load() < int64(*preload) {
		time.Sleep(time.Millisecond)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/", root)
	mux.HandleFunc("/truth", truth)
	mux.HandleFunc("/leak", leak)
	mux.HandleFunc("/spike", spike)
	mux.HandleFunc("/churn", churn)
	mux.HandleFunc("/gc", gc)
	mux.HandleFunc("/hold", hold)
	mux.HandleFunc("/recurse", recurseHandler)
	mux.HandleFunc("/threadexit", threadExit)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, mux))
}

// ---------------------------------------------------------------------------
// Creation sites. Keep each `go` statement on its marked line.

//go:noinline
func leakOne() {
	go blockForever(&leakLive) // LEAK-SITE
}

//go:noinline
func spikeOne(d time.Duration) {
	go sleepThenExit(d) // SPIKE-SITE
}

//go:noinline
func churnOne(wg *sync.WaitGroup) {
	go exitAtOnce(wg) // CHURN-SITE
}

//go:noinline
func preloadOne() {
	go blockForever(&preloadLive) // PRELOAD-SITE
}

func blockForever(live *atomic.Int64) {
	live.Add(1)
	<-forever
}

func sleepThenExit(d time.Duration) {
	time.Sleep(d)
	spikeLive.Add(-1)
}

func exitAtOnce(wg *sync.WaitGroup) {
	wg.Done()
}

// ---------------------------------------------------------------------------
// Handlers

func root(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, "ok")
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.Write(append(b, '\n'))
}

func method(w http.ResponseWriter, r *http.Request, m string) bool {
	if r.Method != m {
		w.Header().Set("Allow", m)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return false
	}
	return true
}

// intParam reads a non-negative integer query parameter (def when absent).
func intParam(w http.ResponseWriter, r *http.Request, name string, def, max int) (int, bool) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > max {
		http.Error(w, fmt.Sprintf("%s must be an integer in 0..%d", name, max), http.StatusBadRequest)
		return 0, false
	}
	return n, true
}

func leak(w http.ResponseWriter, r *http.Request) {
	if !method(w, r, http.MethodPost) {
		return
	}
	n, ok := intParam(w, r, "n", 1, 100000)
	if !ok {
		return
	}
	target := leakLive.Load() + int64(n)
	for i := 0; i < n; i++ {
		leakOne()
	}
	waitAtLeast(&leakLive, target)
	writeJSON(w, map[string]int64{"started": int64(n), "live": leakLive.Load()})
}

// threadExit ends one OS thread that is not the main one: a goroutine that exits
// while locked to its thread makes the runtime terminate that thread (Go >= 1.10).
// Tracers that take a thread's exit for its process's exit stop tracing here. The
// answer names the thread and whether it is gone from /proc/self/task.
func threadExit(w http.ResponseWriter, r *http.Request) {
	if !method(w, r, http.MethodPost) {
		return
	}
	tid := 0
	for i := 0; i < 100 && tid == 0; i++ {
		locked := make(chan int)
		go exitLocked(locked, true)
		tid = <-locked
	}
	gone := false
	for deadline := time.Now().Add(2 * time.Second); tid != 0 && time.Now().Before(deadline); {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); os.IsNotExist(err) {
			gone = true
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	writeJSON(w, map[string]any{"tid": tid, "exited": gone})
}

// exitLocked sends the id of the thread it ends locked to, then returns, which ends
// that thread. The main thread is never ended (the runtime parks it instead), so on
// the main thread it keeps that thread locked, which makes the runtime run a nested
// goroutine on another thread, and lets that one exit instead.
func exitLocked(tid chan<- int, nest bool) {
	runtime.LockOSThread()
	t := syscall.Gettid()
	if t != os.Getpid() {
		tid <- t
		return // still locked: the thread ends with the goroutine
	}
	if nest {
		inner := make(chan int)
		go exitLocked(inner, false)
		t = <-inner
	} else {
		t = 0
	}
	runtime.UnlockOSThread()
	tid <- t
}

func hold(w http.ResponseWriter, r *http.Request) {
	if !method(w, r, http.MethodPost) {
		return
	}
	n, ok := intParam(w, r, "n", 1, 100000)
	if !ok {
		return
	}
	target := preloadLive.Load() + int64(n)
	for i := 0; i < n; i++ {
		preloadOne()
	}
	waitAtLeast(&preloadLive, target)
	writeJSON(w, map[string]int64{"started": int64(n), "live": preloadLive.Load()})
}

// waitAtLeast waits (briefly) until the new goroutines have run and counted
// themselves, so that an answer means they all exist and are blocked.
func waitAtLeast(v *atomic.Int64, target int64) {
	deadline := time.Now().Add(10 * time.Second)
	for v.Load() < target && time.Now().Before(deadline) {
		runtime.Gosched()
		time.Sleep(100 * time.Microsecond)
	}
}

func spike(w http.ResponseWriter, r *http.Request) {
	if !method(w, r, http.MethodPost) {
		return
	}
	n, ok := intParam(w, r, "n", 1, 100000)
	if !ok {
		return
	}
	ms, ok := intParam(w, r, "ms", 1000, 600000)
	if !ok {
		return
	}
	// Counted before they start, so that "live" never undercounts.
	spikeLive.Add(int64(n))
	d := time.Duration(ms) * time.Millisecond
	for i := 0; i < n; i++ {
		spikeOne(d)
	}
	writeJSON(w, map[string]int64{"started": int64(n), "live": spikeLive.Load()})
}

func churn(w http.ResponseWriter, r *http.Request) {
	if !method(w, r, http.MethodPost) {
		return
	}
	n, ok := intParam(w, r, "n", 1, 1000000)
	if !ok {
		return
	}
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		churnOne(&wg)
	}
	wg.Wait()
	writeJSON(w, map[string]int{"done": n})
}

func gc(w http.ResponseWriter, r *http.Request) {
	if !method(w, r, http.MethodPost) {
		return
	}
	n, ok := intParam(w, r, "n", 1, 1000)
	if !ok {
		return
	}
	before := numGC()
	for i := 0; i < n; i++ {
		runtime.GC()
	}
	writeJSON(w, map[string]uint32{"before": before, "after": numGC()})
}

func numGC() uint32 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms) // stops the world; not a GC cycle
	return ms.NumGC
}

func recurseHandler(w http.ResponseWriter, r *http.Request) {
	if !method(w, r, http.MethodGet) {
		return
	}
	depth, ok := intParam(w, r, "depth", 100, 1000000)
	if !ok {
		return
	}
	sum := recurse(depth)
	writeJSON(w, map[string]any{"depth": depth, "checksum": strconv.FormatUint(sum, 10)})
}

// recurse needs a frame of more than 256 bytes per level: a depth of 2000
// grows the goroutine's stack from 8 KiB to over 512 KiB, copying it each
// time it doubles. The array must survive every copy unchanged.
//
// checksum(d) = h(d) * 1099511628211 ^ checksum(d-1) (d > 0), h(0) for d = 0,
// where h(d) is the FNV-1a hash of the 256 bytes (d*7 + i) mod 256.
//
//go:noinline
func recurse(depth int) uint64 {
	var buf [256]byte
	h := fill(&buf, depth)
	if depth == 0 {
		return h
	}
	below := recurse(depth - 1)
	if again := hash(&buf); again != h {
		panic(fmt.Sprintf("stack frame at depth %d changed across a call: %x != %x", depth, again, h))
	}
	return h*1099511628211 ^ below
}

//go:noinline
func fill(buf *[256]byte, depth int) uint64 {
	for i := range buf {
		buf[i] = byte(depth*7 + i)
	}
	return hash(buf)
}

//go:noinline
func hash(buf *[256]byte) uint64 {
	h := uint64(14695981039346656037)
	for _, b := range buf {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return h
}

// ---------------------------------------------------------------------------
// The truth

// truthReport is the answer of GET /truth.
type truthReport struct {
	Pid int `json:"pid"`
	// runtime.NumGoroutine() while this request is served (it includes the
	// goroutines serving the request itself).
	Goroutines int `json:"goroutines"`
	// Goroutines in a stop-the-world dump of all goroutines (runtime.Stack),
	// which lists the same ones NumGoroutine counts.
	StackGoroutines int `json:"stack_goroutines"`
	// Of those, the ones net/http runs for connections (this request's
	// connection goroutine and its background reader).
	HTTPGoroutines int `json:"http_goroutines"`
	// StackGoroutines - HTTPGoroutines: the count when no request is in
	// flight, what a tracer should report between requests.
	IdleGoroutines int `json:"goroutines_idle"`
	// runtime.MemStats.NumGC: completed GC cycles.
	NumGC uint32 `json:"num_gc"`
	// Entries of /proc/self/task: live OS threads of the process.
	Threads int `json:"threads"`
	// runtime.ThreadCreateProfile's record count: the Ms the runtime made,
	// which is what client_golang exports as go_threads. A cgo program has
	// one more than it has OS threads: the extra M kept for C callers.
	ThreadCreate int    `json:"thread_create"`
	GoVersion string `json:"go_version"`
	// Live goroutines per site as counted by the goroutines themselves.
	Sites map[string]int64 `json:"sites"`
	// Live goroutines per creation site as the runtime attributes them
	// ("created by FUNC" and the file:line of the go statement), keyed
	// "FUNC FILE:LINE" like the agent's site label.
	CreatedBy map[string]int `json:"created_by"`
}

var (
	dumpMu  sync.Mutex
	dumpBuf = make([]byte, 1<<20) // reused: /truth must not make the heap grow
)

func truth(w http.ResponseWriter, r *http.Request) {
	if !method(w, r, http.MethodGet) {
		return
	}
	rep := truthReport{
		Pid:       os.Getpid(),
		GoVersion: runtime.Version(),
		Sites: map[string]int64{
			"leak":    leakLive.Load(),
			"spike":   spikeLive.Load(),
			"preload": preloadLive.Load(),
		},
		CreatedBy: map[string]int{},
	}
	rep.Threads = countThreads()
	rep.ThreadCreate, _ = runtime.ThreadCreateProfile(nil)
	rep.NumGC = numGC()
	rep.Goroutines = runtime.NumGoroutine()

	dumpMu.Lock()
	var dump []byte
	for {
		n := runtime.Stack(dumpBuf, true)
		if n < len(dumpBuf) {
			dump = dumpBuf[:n]
			break
		}
		dumpBuf = make([]byte, 2*len(dumpBuf))
	}
	parseDump(dump, &rep)
	dumpMu.Unlock()
	rep.IdleGoroutines = rep.StackGoroutines - rep.HTTPGoroutines
	writeJSON(w, rep)
}

func countThreads() int {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return -1
	}
	return len(entries)
}

// parseDump counts the goroutines of a runtime.Stack(all) dump and the
// "created by" site of each.
func parseDump(dump []byte, rep *truthReport) {
	for _, g := range bytes.Split(dump, []byte("\n\n")) {
		text := string(g)
		if !strings.HasPrefix(text, "goroutine ") {
			continue
		}
		rep.StackGoroutines++
		i := strings.LastIndex(text, "\ncreated by ")
		if i < 0 {
			continue // the main goroutine
		}
		rest := strings.SplitN(text[i+len("\ncreated by "):], "\n", 3)
		fn := rest[0]
		if j := strings.Index(fn, " in goroutine "); j >= 0 {
			fn = fn[:j]
		}
		if fn == "net/http.(*Server).Serve" || fn == "net/http.(*connReader).startBackgroundRead" {
			rep.HTTPGoroutines++
		}
		loc := ""
		if len(rest) > 1 {
			loc = strings.TrimSpace(rest[1])
			if j := strings.LastIndex(loc, " +0x"); j >= 0 {
				loc = loc[:j]
			}
		}
		rep.CreatedBy[fn+" "+loc]++
	}
}
