// goproxy is a reverse proxy in front of one backend, a tracing target for
// the end-to-end tests of traces that cross processes. It is built with
// several Go toolchains and link modes from this one source, stdlib only.
//
// Environment: BACKEND=host:port (required).
//
//	GET  /fanout/{id}  handled here: three goroutines (`go func`) each GET
//	                   http://$BACKEND/leaf/{id}-{k} (k = 0, 1, 2) with the
//	                   default client; 200 once all three answered 200, 502
//	                   otherwise. Tests the lineage of goroutines spawned by
//	                   a handler.
//	GET  /pool/{id}    handled here: the handler hands the job to a fixed pool
//	                   of worker goroutines started by main, one of which GETs
//	                   http://$BACKEND/leaf/w{id}; 200 once it answered 200. The
//	                   call is not the handler's (its goroutine is not the
//	                   handler's descendant): tracers must not link it.
//	any  every other path is forwarded to $BACKEND by
//	                   net/http/httputil.ReverseProxy over the default
//	                   transport (pooled keep-alive connections), with
//	                   Host: $BACKEND; 502 when the backend cannot be
//	                   reached.
//
// WRAP=embed wraps each accepted connection in a struct embedding net.Conn (as
// connection trackers, PROXY-protocol and graceful-restart libraries do);
// WRAP=limit in a concurrency-limiting listener's own conn type (the shape of
// x/net/netutil.LimitListener); unset: the plain *net.TCPConn.
//
// Usage: goproxy [PORT] (default 0: a kernel-chosen port on 127.0.0.1).
// It prints "listening on HOST:PORT" on stdout once the socket listens.
package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// fanoutCalls is how many concurrent backend calls GET /fanout/{id} makes.
const fanoutCalls = 3

func main() {
	backend := os.Getenv("BACKEND")
	if backend == "" {
		log.Fatal("BACKEND=host:port is not set")
	}
	port := "0"
	if len(os.Args) > 1 {
		port = os.Args[1]
	}

	mux := http.NewServeMux()
	// A prefix pattern: the same routing with the pre-1.22 and the 1.22+ mux.
	mux.HandleFunc("/fanout/", func(w http.ResponseWriter, r *http.Request) {
		fanout(w, r, backend)
	})
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: backend})
	director := proxy.Director
	proxy.Director = func(r *http.Request) {
		director(r)
		// Address the backend by its own name, as ProxyRequest.SetURL does
		// (NewSingleHostReverseProxy keeps the incoming Host).
		r.Host = backend
	}
	jobs := make(chan poolJob)
	for i := 0; i < poolWorkers; i++ {
		go poolWorker(jobs)
	}
	mux.HandleFunc("/pool/", func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/pool/")
		done := make(chan error, 1)
		jobs <- poolJob{url: fmt.Sprintf("http://%s/leaf/w%s", backend, id), done: done}
		if err := <-done; err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "pool %s\n", id)
	})
	mux.Handle("/", proxy)

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		log.Fatalf("listen 127.0.0.1:%s: %v", port, err)
	}
	switch os.Getenv("WRAP") {
	case "embed":
		ln = &trackingListener{Listener: ln}
	case "limit":
		ln = newLimitedListener(ln, 256)
	case "":
	default:
		log.Fatalf("WRAP=%q: want embed or limit", os.Getenv("WRAP"))
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, mux))
}

func fanout(w http.ResponseWriter, r *http.Request, backend string) {
	id := strings.TrimPrefix(r.URL.Path, "/fanout/")
	if id == "" || strings.Contains(id, "/") || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	var wg sync.WaitGroup
	errs := make([]error, fanoutCalls)
	for k := 0; k < fanoutCalls; k++ {
		wg.Add(1)
		// k is passed as an argument: before Go 1.22 the loop variable is
		// shared by all iterations.
		go func(k int) {
			defer wg.Done()
			errs[k] = leaf(fmt.Sprintf("http://%s/leaf/%s-%d", backend, id, k))
		}(k)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "fanout %s: %d calls\n", id, fanoutCalls)
}

func leaf(u string) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	return nil
}

// poolWorkers is how many goroutines serve /pool jobs.
const poolWorkers = 4

type poolJob struct {
	url  string
	done chan<- error
}

func poolWorker(jobs <-chan poolJob) {
	for j := range jobs {
		j.done <- leaf(j.url)
	}
}

// trackingListener counts open connections by handing each out in its own type.
type trackingListener struct {
	net.Listener
	open atomic.Int64
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	return &trackedConn{Conn: c, l: l}, nil
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// limitedListener accepts at most cap(slots) connections at once; each is
// handed out as a limitedConn that frees its slot when closed.
type limitedListener struct {
	net.Listener
	slots chan struct{}
}

func newLimitedListener(l net.Listener, n int) net.Listener {
	return &limitedListener{Listener: l, slots: make(chan struct{}, n)}
}

func (l *limitedListener) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, free: func() { <-l.slots }}, nil
}

type limitedConn struct {
	net.Conn
	once sync.Once
	free func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.free)
	return err
}
