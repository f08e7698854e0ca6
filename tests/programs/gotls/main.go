// gotls is a Go HTTPS server and client (crypto/tls, HTTP/1.1 or HTTP/2) used as a
// tracing target by the Go TLS end-to-end test. Stdlib only; built with several Go toolchains,
// plain and stripped.
//
//	gotls server LOG WRAP [PROTO]  listens on 127.0.0.1:0 with a certificate made at start,
//	                          prints "listening on ADDR", appends one line per request to
//	                          LOG: "METHOD PATH STATUS BYTES" (BYTES = response body)
//	gotls client URL SEED N GO WRAP [PROTO]  waits for the file GO to exist, then makes N seeded
//	                          requests to URL (GET/HEAD/POST, 404s, bodies up to 1 MiB,
//	                          keep-alive and fresh connections) and prints the same line
//	                          per exchange, then "done"
//
// WRAP is what the tls.Conn wraps: "none" (the *net.TCPConn), "embed" (a struct that
// embeds the net.Conn as its first field) or "opaque" (a struct holding it after other
// fields, forwarding each method), as proxies and instrumentation libraries do.
//
// PROTO is "h1" (the default: both force HTTP/1.1, TLSNextProto empty) or "h2" (HTTP/2
// by ALPN, net/http's own HTTP/2 on both ends; the client attempts it although it dials
// itself).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	mrand "math/rand"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: gotls server LOG WRAP [PROTO] | gotls client URL SEED N GOFILE WRAP [PROTO]")
	}
	proto := func(i int) bool {
		if len(os.Args) <= i {
			return false
		}
		switch os.Args[i] {
		case "h1":
			return false
		case "h2":
			return true
		}
		log.Fatalf("unknown PROTO %q", os.Args[i])
		return false
	}
	switch os.Args[1] {
	case "server":
		server(os.Args[2], os.Args[3], proto(4))
	case "client":
		seed, _ := strconv.ParseInt(os.Args[3], 10, 64)
		n, _ := strconv.Atoi(os.Args[4])
		client(os.Args[2], seed, n, os.Args[5], os.Args[6], proto(7))
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
}

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// counter counts the response body bytes a handler writes.
type counter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (c *counter) WriteHeader(s int) {
	if c.status == 0 {
		c.status = s
	}
	c.ResponseWriter.WriteHeader(s)
}

func (c *counter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = 200
	}
	n, err := c.ResponseWriter.Write(b)
	c.bytes += int64(n)
	return n, err
}

// embedded: the net.Conn first, promoted methods.
type embedded struct {
	net.Conn
	reads int
}

// opaque: the net.Conn behind other fields, every method forwarded.
type opaque struct {
	id    int64
	name  string
	inner net.Conn
}

func (o *opaque) Read(b []byte) (int, error)         { return o.inner.Read(b) }
func (o *opaque) Write(b []byte) (int, error)        { return o.inner.Write(b) }
func (o *opaque) Close() error                       { return o.inner.Close() }
func (o *opaque) LocalAddr() net.Addr                { return o.inner.LocalAddr() }
func (o *opaque) RemoteAddr() net.Addr               { return o.inner.RemoteAddr() }
func (o *opaque) SetDeadline(t time.Time) error      { return o.inner.SetDeadline(t) }
func (o *opaque) SetReadDeadline(t time.Time) error  { return o.inner.SetReadDeadline(t) }
func (o *opaque) SetWriteDeadline(t time.Time) error { return o.inner.SetWriteDeadline(t) }

func wrap(c net.Conn, how string) net.Conn {
	switch how {
	case "none":
		return c
	case "embed":
		return &embedded{Conn: c}
	case "opaque":
		return &opaque{id: 1, name: "wrapped", inner: c}
	}
	log.Fatalf("unknown WRAP %q", how)
	return nil
}

type wrapListener struct {
	net.Listener
	how string
}

func (l wrapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return wrap(c, l.how), nil
}

func server(logPath, how string, h2 bool) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &counter{ResponseWriter: w}
		switch {
		case strings.HasPrefix(r.URL.Path, "/missing/"):
			http.NotFound(c, r)
		case r.Method == http.MethodPost:
			n, _ := io.Copy(io.Discard, r.Body)
			c.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(c, "received %d bytes\n", n)
		default:
			size, _ := strconv.Atoi(r.URL.Query().Get("size"))
			c.Header().Set("Content-Length", strconv.Itoa(size))
			c.WriteHeader(200)
			if r.Method != http.MethodHead {
				c.Write(bytes.Repeat([]byte("g"), size))
			}
		}
		if c.status == 0 {
			c.status = 200
		}
		mu.Lock()
		fmt.Fprintf(logFile, "%s %s %d %d\n", r.Method, r.URL.Path, c.status, c.bytes)
		mu.Unlock()
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler:      handler,
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{selfSigned()}},
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     log.New(io.Discard, "", 0),
	}
	if h2 {
		// nil: ServeTLS offers h2 by ALPN.
		srv.TLSNextProto = nil
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(srv.ServeTLS(wrapListener{ln, how}, "", ""))
}

func client(base string, seed int64, n int, goFile, how string, h2 bool) {
	for {
		if _, err := os.Stat(goFile); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	rng := mrand.New(mrand.NewSource(seed))
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
		ForceAttemptHTTP2: false,
		MaxIdleConns:      4,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return wrap(c, how), nil
		},
	}
	if h2 {
		tr.TLSNextProto = nil
		tr.ForceAttemptHTTP2 = true
	}
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	out := bufio.NewWriter(os.Stdout)
	sizes := []int{0, 1, 100, 5000, 70000, 1 << 20}
	for i := 0; i < n; i++ {
		var method, path string
		var body []byte
		k := rng.Float64()
		switch {
		case k < 0.15:
			method, path = "GET", fmt.Sprintf("/missing/%d", i)
		case k < 0.25:
			method, path = "HEAD", fmt.Sprintf("/gotls/%d?size=%d", i, sizes[rng.Intn(4)])
		case k < 0.55:
			method, path = "POST", fmt.Sprintf("/gotls/%d", i)
			body = bytes.Repeat([]byte("p"), sizes[1+rng.Intn(len(sizes)-1)])
		default:
			method, path = "GET", fmt.Sprintf("/gotls/%d?size=%d", i, sizes[rng.Intn(len(sizes))])
		}
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, base+path, rd)
		if err != nil {
			log.Fatal(err)
		}
		// Some exchanges on a fresh connection, closed after the response.
		req.Close = rng.Intn(4) == 0
		resp, err := hc.Do(req)
		if err != nil {
			log.Fatalf("%s %s: %v", method, path, err)
		}
		got, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		p := path
		if q := strings.IndexByte(p, '?'); q >= 0 {
			p = p[:q]
		}
		if h2 != (resp.ProtoMajor == 2) {
			log.Fatalf("%s %s: answered over %s", method, path, resp.Proto)
		}
		fmt.Fprintf(out, "%s %s %d %d\n", method, p, resp.StatusCode, got)
	}
	fmt.Fprintln(out, "done")
	out.Flush()
}
