// golog: a net/http server for the conformance suite that logs every exchange it
// serves, as the truth the agent's spans are compared with. One line per request on
// stderr: method, request URI, status, response body bytes written ("-" when the
// response was chunked, whose wire size includes framing the handler never sees).
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
)

type recorder struct {
	http.ResponseWriter
	status  int
	written int64
	chunked bool
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = 200
	}
	n, err := r.ResponseWriter.Write(b)
	r.written += int64(n)
	return n, err
}

var logMu sync.Mutex

func handler(w http.ResponseWriter, req *http.Request) {
	rec := &recorder{ResponseWriter: w}
	read, _ := io.Copy(io.Discard, req.Body)
	_ = read
	path := req.URL.Path
	switch {
	case path == "/empty":
		rec.WriteHeader(204)
	case path == "/missing":
		http.NotFound(rec, req)
	case path == "/error":
		http.Error(rec, "boom", 500)
	case path == "/big":
		rec.Header().Set("Content-Length", "307200")
		rec.Write([]byte(strings.Repeat("b", 307200)))
	case path == "/stream":
		// No Content-Length and several flushes: chunked.
		rec.chunked = req.ProtoAtLeast(1, 1) && req.Method != "HEAD"
		for i := 0; i < 5; i++ {
			rec.Write([]byte(strings.Repeat("s", 3000)))
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
		}
	default:
		rec.Header().Set("Content-Length", "6")
		rec.Write([]byte("hello\n"))
	}
	if rec.status == 0 {
		rec.status = 200
	}
	size := fmt.Sprint(rec.written)
	if rec.chunked || req.Method == "HEAD" {
		size = "-"
	}
	logMu.Lock()
	fmt.Fprintf(os.Stderr, "%s\t%s\t%d\t%s\n", req.Method, req.RequestURI, rec.status, size)
	logMu.Unlock()
}

// trackedConn is what connection-tracking, PROXY-protocol and graceful-restart
// libraries hand net/http: its own type embedding the accepted net.Conn.
type trackedConn struct {
	net.Conn
	id int64
}

type wrapListener struct {
	net.Listener
	mu   sync.Mutex
	next int64
}

func (l *wrapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.next++
	id := l.next
	l.mu.Unlock()
	return &trackedConn{Conn: c, id: id}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	wrap := flag.Bool("wrap", false, "wrap each accepted connection in a type of our own")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	if *wrap {
		ln = &wrapListener{Listener: ln}
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	log.Fatal(http.Serve(ln, http.HandlerFunc(handler)))
}
