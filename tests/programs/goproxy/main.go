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
//	any  every other path is forwarded to $BACKEND by
//	                   net/http/httputil.ReverseProxy over the default
//	                   transport (pooled keep-alive connections), with
//	                   Host: $BACKEND; 502 when the backend cannot be
//	                   reached.
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
	mux.Handle("/", proxy)

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		log.Fatalf("listen 127.0.0.1:%s: %v", port, err)
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
