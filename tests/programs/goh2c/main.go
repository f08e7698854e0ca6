// goh2c is a Go net/http server speaking HTTP/2 in cleartext through
// golang.org/x/net/http2/h2c (Debian's golang-golang-x-net-dev, built in GOPATH mode
// against /usr/share/gocode): prior knowledge and the HTTP/1.1 Upgrade (RFC 7540
// §3.2), where the request that asked for the upgrade is answered on stream 1. It is
// a tracing target for the h2c end-to-end test.
//
//	goh2c server LOG   listens on 127.0.0.1:0, prints "listening on ADDR", appends one
//	                   line per request served to LOG, written after the handler:
//	                   "METHOD PATH PROTO STATUS REQUEST_BODY_BYTES RESPONSE_BODY_BYTES"
//	                   GET|POST|... /s/CODE/SIZE answers CODE with SIZE body bytes
//	                   (after reading the whole request body)
//	goh2c client ADDR SEED N GO [BEFORE]  makes BEFORE (default 0) seeded requests,
//	                   prints "ready", waits for the file GO to exist, then makes N
//	                   more, all with prior knowledge (an http2.Transport dialing plain
//	                   TCP) on one shared connection; prints the same line per response
//	                   made after the wait, then "done", and stays up until killed
package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

func main() {
	if len(os.Args) < 3 {
		log.Fatal("usage: goh2c server LOG | goh2c client ADDR SEED N GOFILE")
	}
	switch os.Args[1] {
	case "server":
		server(os.Args[2])
	case "client":
		seed, _ := strconv.ParseInt(os.Args[3], 10, 64)
		n, _ := strconv.Atoi(os.Args[4])
		before := 0
		if len(os.Args) > 6 {
			before, _ = strconv.Atoi(os.Args[6])
		}
		client(os.Args[2], seed, n, os.Args[5], before)
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
}

// countingWriter counts the body bytes a handler wrote and remembers its status.
type countingWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *countingWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func server(logPath string) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w}
		in, _ := io.Copy(io.Discard, r.Body)
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
		code, size := http.StatusNotFound, 0
		if len(parts) == 3 && parts[0] == "s" {
			if c, err := strconv.Atoi(parts[1]); err == nil && c >= 200 && c < 600 {
				code = c
			}
			size, _ = strconv.Atoi(parts[2])
		}
		if r.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified {
			size = 0
		}
		cw.Header().Set("Content-Type", "text/plain")
		cw.WriteHeader(code)
		if size > 0 {
			cw.Write(bytes.Repeat([]byte("x"), size))
		}
		mu.Lock()
		fmt.Fprintf(logFile, "%s %s %s %d %d %d\n", r.Method, r.URL.RequestURI(), r.Proto, cw.status, in, cw.bytes)
		mu.Unlock()
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	srv := &http.Server{Handler: h2c.NewHandler(handler, &http2.Server{})}
	log.Fatal(srv.Serve(ln))
}

func client(addr string, seed int64, n int, goFile string, before int) {
	rng := rand.New(rand.NewSource(seed))
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLS: func(network, addr string, _ *tls.Config) (net.Conn, error) {
			return net.Dial(network, addr)
		},
	}
	c := &http.Client{Transport: tr}
	codes := []int{200, 200, 201, 404, 500}
	for i := 0; i < before+n; i++ {
		if i == before {
			fmt.Println("ready")
			os.Stdout.Sync()
			for {
				if _, err := os.Stat(goFile); err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		code := codes[rng.Intn(len(codes))]
		size := rng.Intn(3) * rng.Intn(20000)
		method, body := "GET", []byte(nil)
		if rng.Intn(3) == 0 {
			method, body = "POST", bytes.Repeat([]byte("y"), rng.Intn(30000))
		}
		path := fmt.Sprintf("/s/%d/%d", code, size)
		req, err := http.NewRequest(method, "http://"+addr+path, bytes.NewReader(body))
		if err != nil {
			log.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		got, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if i >= before {
			fmt.Printf("%s %s %s %d %d %d\n", method, path, resp.Proto, resp.StatusCode, len(body), got)
		}
	}
	fmt.Println("done")
	os.Stdout.Sync()
	select {}
}
