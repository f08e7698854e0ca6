// gogrpc is a grpc-go server and client (Debian's golang-google-grpc-dev, built in
// GOPATH mode against /usr/share/gocode) used as a tracing target by the gRPC
// end-to-end test. It serves and calls the standard health service, so no code
// generation is needed.
//
//	gogrpc server LOG         listens on 127.0.0.1:0 (h2c), prints "listening on ADDR",
//	                          appends one line per finished RPC to LOG:
//	                          "FULL_METHOD CODE" (CODE: the gRPC status code number)
//	gogrpc client ADDR SEED N GO  waits for the file GO to exist, then makes N seeded
//	                          RPCs (Health/Check answered OK and NOT_FOUND, and
//	                          server-streaming Health/Watch read to its first message,
//	                          then cancelled, on the shared connection only) on
//	                          one shared connection from several goroutines and on
//	                          fresh ones; prints the same line per RPC, then "done",
//	                          and stays up until killed
//	gogrpc load ADDR SECONDS CONC  unary Health/Check calls from CONC goroutines over
//	                          2 connections for SECONDS (the benchmark's load), then
//	                          prints "requests N rps R p99_ms P"
//	gogrpc front ADDR LOG     an HTTP/1.1 server on 127.0.0.1:0 (prints "listening on
//	                          ADDR2") whose handlers call the gRPC server at ADDR over
//	                          one connection they all share, dialled at the first
//	                          request: /check calls Health/Check
//	                          from the handler's goroutine, /spawned from a goroutine
//	                          the handler starts and waits for, /watch reads the first
//	                          message of Health/Watch, then cancels it. Appends
//	                          "PATH CODE" to LOG per request (CODE: the call's gRPC
//	                          status code number)
//
// With GOGRPC_TLS=1 in the environment the server serves over TLS (a self-signed
// certificate made at start, ALPN h2) and the client and load modes dial TLS without
// verifying it: HTTP/2 in Go crypto/tls plaintext instead of h2c.
//
// Some NOT_FOUND checks name a service of 3000 bytes: with a burst of calls, one write
// holds frames of other streams after their DATA, far past the 2 KiB the agent captures
// of a write's head.
package main

import (
	"bufio"
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
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func main() {
	if len(os.Args) < 3 {
		log.Fatal("usage: gogrpc server LOG | gogrpc client ADDR SEED N GOFILE")
	}
	switch os.Args[1] {
	case "server":
		server(os.Args[2])
	case "client":
		seed, _ := strconv.ParseInt(os.Args[3], 10, 64)
		n, _ := strconv.Atoi(os.Args[4])
		client(os.Args[2], seed, n, os.Args[5])
	case "front":
		front(os.Args[2], os.Args[3])
	case "load":
		secs, _ := strconv.Atoi(os.Args[3])
		conc, _ := strconv.Atoi(os.Args[4])
		load(os.Args[2], time.Duration(secs)*time.Second, conc)
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
}

// useTLS: GOGRPC_TLS=1.
var useTLS = os.Getenv("GOGRPC_TLS") == "1"

// serverCreds: a self-signed certificate for 127.0.0.1, made now.
func serverCreds() grpc.ServerOption {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gogrpc"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}}))
}

// dialOption: TLS without verification (GOGRPC_TLS=1) or h2c.
func dialOption() grpc.DialOption {
	if useTLS {
		return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}))
	}
	return grpc.WithInsecure()
}

func server(logPath string) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	record := func(method string, err error) {
		mu.Lock()
		fmt.Fprintf(logFile, "%s %d\n", method, int(status.Code(err)))
		mu.Unlock()
	}
	unary := func(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (interface{}, error) {
		resp, err := h(ctx, req)
		record(info.FullMethod, err)
		return resp, err
	}
	stream := func(srv interface{}, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		err := h(srv, ss)
		record(info.FullMethod, err)
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	opts := []grpc.ServerOption{grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream)}
	if useTLS {
		opts = append(opts, serverCreds())
	}
	s := grpc.NewServer(opts...)
	hs := health.NewServer()
	hs.SetServingStatus("periscope.Up", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(s.Serve(ln))
}

func client(addr string, seed int64, n int, goFile string) {
	for {
		if _, err := os.Stat(goFile); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	rng := mrand.New(mrand.NewSource(seed))
	dial := func() *grpc.ClientConn {
		cc, err := grpc.Dial(addr, dialOption(), grpc.WithBlock())
		if err != nil {
			log.Fatal(err)
		}
		return cc
	}
	shared := dial()
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	record := func(method string, err error) {
		mu.Lock()
		fmt.Fprintf(out, "%s %d\n", method, int(status.Code(err)))
		mu.Unlock()
	}
	// One RPC of a seeded kind on cc.
	call := func(cc *grpc.ClientConn, k float64) {
		hc := healthpb.NewHealthClient(cc)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		switch {
		case k < 0.5:
			_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "periscope.Up"})
			record("/grpc.health.v1.Health/Check", err)
		case k < 0.85:
			service := "periscope.Missing"
			if k < 0.7 {
				service += "." + strings.Repeat("x", 3000)
			}
			_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
			record("/grpc.health.v1.Health/Check", err)
		default:
			// Watch: read the first message (SERVING), then cancel. The client resets
			// the stream; both ends end the RPC with CANCELLED.
			wctx, wcancel := context.WithCancel(ctx)
			w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{Service: "periscope.Up"})
			if err == nil {
				_, err = w.Recv()
			}
			wcancel()
			if err == nil {
				// Drain until the cancellation is seen, so that the RPC is over.
				for err == nil {
					_, err = w.Recv()
				}
			}
			if err == io.EOF {
				err = nil
			}
			record("/grpc.health.v1.Health/Watch", err)
		}
	}
	done := 0
	for done < n {
		switch r := rng.Float64(); {
		case r < 0.6:
			// A burst on the shared connection, concurrent streams.
			burst := 1 + rng.Intn(8)
			if burst > n-done {
				burst = n - done
			}
			ks := make([]float64, burst)
			for i := range ks {
				ks[i] = rng.Float64()
			}
			var wg sync.WaitGroup
			for _, k := range ks {
				wg.Add(1)
				go func(k float64) {
					defer wg.Done()
					call(shared, k)
				}(k)
			}
			wg.Wait()
			done += burst
		default:
			// A fresh connection for one unary RPC. Not a cancelled Watch: grpc-go's
			// writer goroutine sends its RST_STREAM later, and a Close right after the
			// cancel may close the connection first, the stream still open on both
			// ends: the agent then counts both streams as unplaced (closed) instead
			// of giving spans, while both programs log CANCELLED.
			cc := dial()
			call(cc, rng.Float64()*0.85)
			cc.Close()
			done++
		}
	}
	fmt.Fprintln(out, "done")
	out.Flush()
	// Stay up with the shared connection open until killed: exiting now could close
	// it before the last cancelled Watch's RST_STREAM is written (as above).
	select {}
}

func load(addr string, d time.Duration, conc int) {
	var conns [2]*grpc.ClientConn
	for i := range conns {
		cc, err := grpc.Dial(addr, dialOption(), grpc.WithBlock())
		if err != nil {
			log.Fatal(err)
		}
		conns[i] = cc
	}
	start := time.Now()
	end := start.Add(d)
	lat := make([][]time.Duration, conc)
	var wg sync.WaitGroup
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			hc := healthpb.NewHealthClient(conns[g%len(conns)])
			req := &healthpb.HealthCheckRequest{Service: "periscope.Up"}
			for time.Now().Before(end) {
				t := time.Now()
				if _, err := hc.Check(context.Background(), req); err != nil {
					log.Fatal(err)
				}
				lat[g] = append(lat[g], time.Since(t))
			}
		}(g)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	p99 := time.Duration(0)
	if len(all) > 0 {
		p99 = all[len(all)*99/100]
	}
	fmt.Printf("requests %d rps %.1f p99_ms %.3f\n", len(all),
		float64(len(all))/elapsed.Seconds(), float64(p99.Microseconds())/1000)
}

// front serves HTTP/1.1 requests whose handlers call the gRPC server at addr.
func front(addr, logPath string) {
	// Dialled at the first request, so that a tracer started after this program sees
	// the connection from its first byte.
	var once sync.Once
	var hc healthpb.HealthClient
	health := func() healthpb.HealthClient {
		once.Do(func() {
			cc, err := grpc.Dial(addr, dialOption(), grpc.WithBlock())
			if err != nil {
				log.Fatalf("dial %s: %v", addr, err)
			}
			hc = healthpb.NewHealthClient(cc)
		})
		return hc
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	answer := func(w http.ResponseWriter, r *http.Request, err error) {
		mu.Lock()
		fmt.Fprintf(logf, "%s %d\n", r.URL.Path, status.Code(err))
		mu.Unlock()
		fmt.Fprintf(w, "%d\n", status.Code(err))
	}
	check := func(ctx context.Context) error {
		_, err := health().Check(ctx, &healthpb.HealthCheckRequest{Service: "periscope.Up"})
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/check", func(w http.ResponseWriter, r *http.Request) {
		answer(w, r, check(r.Context()))
	})
	mux.HandleFunc("/spawned", func(w http.ResponseWriter, r *http.Request) {
		done := make(chan error)
		go func() { done <- check(r.Context()) }()
		answer(w, r, <-done)
	})
	mux.HandleFunc("/watch", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		wc, err := health().Watch(ctx, &healthpb.HealthCheckRequest{Service: "periscope.Up"})
		if err == nil {
			_, err = wc.Recv()
		}
		answer(w, r, err)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	log.Fatal(http.Serve(ln, mux))
}
