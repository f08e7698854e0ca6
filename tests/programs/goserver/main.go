// goserver is an ordinary net/http server used as a tracing target by the
// end-to-end tests. It is built with several Go toolchains and link modes
// (plain, stripped, cgo/external) from this one source, stdlib only, so the
// same handlers exist in every build.
//
// Endpoints (every one also answers HEAD where it answers GET):
//
//	GET  /               200 "hello"
//	any  /<unknown>      404
//	GET  /error          500
//	GET  /status?code=N  N (100 < N < 600)
//	POST|PUT /echo       200, echoes the request body (read fully)
//	GET  /stream         200, chunked body written in several flushed parts
//	GET  /users/{id}     200 (Go >= 1.22 pattern; a prefix handler on 1.21)
//	GET  /slow?ms=N      200 after sleeping N milliseconds
//	GET  /proxy?url=U    makes an outgoing GET to U (loopback only) and
//	                     answers with its status (502 if it failed)
//
// It prints "listening on HOST:PORT" on stdout once the socket listens.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("/", root)
	mux.HandleFunc("/error", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "internal error", http.StatusInternalServerError)
	})
	mux.HandleFunc("/status", status)
	mux.HandleFunc("/echo", echo)
	mux.HandleFunc("/stream", stream)
	mux.HandleFunc("/slow", slow)
	mux.HandleFunc("/proxy", proxy)
	registerUsers(mux) // mux_go121.go / mux_go122.go

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, mux))
}

func root(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, "hello\n")
}

func status(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.URL.Query().Get("code"))
	if err != nil || code < 200 || code > 599 {
		http.Error(w, "bad code", http.StatusBadRequest)
		return
	}
	w.WriteHeader(code)
	fmt.Fprintf(w, "status %d\n", code)
}

func echo(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		w.Header().Set("Allow", "POST, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

func stream(w http.ResponseWriter, r *http.Request) {
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/plain")
	for i := 0; i < 5; i++ {
		fmt.Fprintf(w, "part %d\n", i)
		if flusher != nil {
			flusher.Flush()
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func slow(w http.ResponseWriter, r *http.Request) {
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	if ms < 0 || ms > 10000 {
		ms = 0
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	fmt.Fprintf(w, "slept %dms\n", ms)
}

var proxyClient = &http.Client{Timeout: 10 * time.Second}

func proxy(w http.ResponseWriter, r *http.Request) {
	u, err := url.Parse(r.URL.Query().Get("url"))
	if err != nil || u.Scheme != "http" || !isLoopback(u.Hostname()) {
		http.Error(w, "url must be http:// on loopback", http.StatusBadRequest)
		return
	}
	resp, err := proxyClient.Get(u.String())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, resp.Body)
	w.WriteHeader(resp.StatusCode)
	fmt.Fprintf(w, "upstream %d, %d bytes\n", resp.StatusCode, n)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func user(w http.ResponseWriter, id string) {
	fmt.Fprintf(w, "user %s\n", id)
}
