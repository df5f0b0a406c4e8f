// Command testapp is the application the e2e cluster runs as its test fixture
// (the role upstream mirrord's "py-serv" plays): a small HTTP service that
// shows what its pod sees, so tests can tell which pod answered and compare
// what mirrord gives a local process with what the pod has.
//
//	testapp serve            HTTP/1.1 and h2c server on $PORT (default 80); with
//	                         $TLS_CERT_FILE and $TLS_KEY_FILE (PEM), HTTPS instead
//	                         (HTTP/2 and HTTP/1.1 by ALPN)
//	testapp get URL          GET URL, print the body (exit 1 on errors/non-2xx)
//	testapp lookup NAME      resolve NAME with the pod's resolv.conf, print addresses
//	testapp abuse-origin     the target's app of the abuse tests (package
//	                         integration/abuse: "orig <body length>", /big 8 MiB),
//	                         HTTP/1.1 and h2c on $PORT (default 80)
//
// Server endpoints (GET unless noted):
//
//	/          JSON: service, hostname, pod IP, method, path, headers, peer,
//	           protocol (HTTP/1.1, HTTP/2.0) and, over TLS, the server name
//	           the client asked for (SNI)
//	/env       JSON object of the process environment
//	/file      content of $CONFIG_FILE, or of ?path=FILE
//	/hostname  the hostname
//	/call      GET $BACKEND_URL (+ ?path=P) and return {"via": hostname, "backend": answer}
//	/health    "ok"
//	/bytes     ?n=N: N bytes (default 1 MiB) of a fixed pattern, for throughput benchmarks
//	any other method on any path: echoes the request body back
//
// Every request is logged on stdout, so `kubectl logs` shows traffic.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mirrord-go/mirrord/integration/abuse"
)

func main() {
	log.SetFlags(0)
	log.SetOutput(os.Stdout)
	args := os.Args[1:]
	if len(args) == 0 {
		args = []string{"serve"}
	}
	var err error
	switch {
	case args[0] == "serve" && len(args) == 1:
		err = serve()
	case args[0] == "get" && len(args) == 2:
		err = get(args[1])
	case args[0] == "lookup" && len(args) == 2:
		err = lookup(args[1])
	case args[0] == "abuse-origin" && len(args) == 1:
		err = abuseOrigin()
	default:
		fmt.Fprintln(os.Stderr, "usage: testapp serve | get URL | lookup NAME | abuse-origin")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
}

// abuseOrigin serves abuse.OrigHandler until SIGTERM.
func abuseOrigin() error {
	ln, err := net.Listen("tcp", ":"+env("PORT", "80"))
	if err != nil {
		return err
	}
	srv := abuse.Serve(ln, nil)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	return srv.Close()
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func serve() error {
	service := env("SERVICE_NAME", "testapp")
	addr := ":" + env("PORT", "80")
	host, _ := os.Hostname()
	client := &http.Client{Timeout: 5 * time.Second}

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			// py-serv style: echo whatever was sent.
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(body)
			return
		}
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		headers := map[string]string{}
		for k, v := range r.Header {
			headers[k] = strings.Join(v, ", ")
		}
		answer := map[string]any{
			"service":  service,
			"hostname": host,
			"pod_ip":   os.Getenv("POD_IP"),
			"method":   r.Method,
			"path":     r.URL.Path,
			"headers":  headers,
			"peer":     r.RemoteAddr,
			"proto":    r.Proto,
		}
		if r.TLS != nil {
			// What the HTTPS tests check that a TLS-ending proxy in
			// front of the app kept.
			answer["tls_server_name"] = r.TLS.ServerName
		}
		writeJSON(w, answer)
	})
	mux.HandleFunc("GET /env", func(w http.ResponseWriter, r *http.Request) {
		vars := map[string]string{}
		for _, kv := range os.Environ() {
			k, v, _ := strings.Cut(kv, "=")
			vars[k] = v
		}
		writeJSON(w, vars)
	})
	mux.HandleFunc("GET /file", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("path")
		if name == "" {
			name = env("CONFIG_FILE", "/app/config.json")
		}
		data, err := os.ReadFile(name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(data)
	})
	mux.HandleFunc("GET /hostname", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, host)
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n := int64(1 << 20)
		if q := r.URL.Query().Get("n"); q != "" {
			v, err := strconv.ParseInt(q, 10, 64)
			if err != nil || v < 0 {
				http.Error(w, "n: want a byte count", http.StatusBadRequest)
				return
			}
			n = v
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		buf := make([]byte, 256<<10)
		for i := range buf {
			buf[i] = byte(i)
		}
		for n > 0 {
			k, err := w.Write(buf[:min(n, int64(len(buf)))])
			if err != nil {
				return
			}
			n -= int64(k)
		}
	})
	mux.HandleFunc("GET /call", func(w http.ResponseWriter, r *http.Request) {
		backend := os.Getenv("BACKEND_URL")
		if backend == "" {
			http.Error(w, "BACKEND_URL is not set", http.StatusNotImplemented)
			return
		}
		url := strings.TrimSuffix(backend, "/") + "/" + strings.TrimPrefix(r.URL.Query().Get("path"), "/")
		resp, err := client.Get(url)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		answer := any(string(body))
		var parsed any
		if json.Unmarshal(body, &parsed) == nil {
			answer = parsed
		}
		writeJSON(w, map[string]any{"via": host, "url": url, "status": resp.StatusCode, "backend": answer})
	})

	// HTTP/1.1 and cleartext HTTP/2 (prior knowledge), like a gRPC or
	// h2c service: the e2e tests steal h2c streams by filter and pass the
	// others through to this app.
	// With a certificate (TLS_CERT_FILE, TLS_KEY_FILE), HTTPS with HTTP/2
	// and HTTP/1.1 by ALPN, as most services that end TLS themselves.
	certFile, keyFile := os.Getenv("TLS_CERT_FILE"), os.Getenv("TLS_KEY_FILE")
	if (certFile == "") != (keyFile == "") {
		return errors.New("TLS_CERT_FILE and TLS_KEY_FILE: set both (HTTPS) or neither (HTTP)")
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	if certFile != "" {
		protos.SetHTTP2(true)
	} else {
		protos.SetUnencryptedHTTP2(true)
	}
	srv := &http.Server{Addr: addr, Handler: logRequests(service, mux), ReadHeaderTimeout: 10 * time.Second, Protocols: &protos}
	// Exit promptly on SIGTERM: as PID 1 of its container nothing else would
	// stop it, and a slow exit makes every pod deletion wait for the grace
	// period.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	var err error
	if certFile != "" {
		log.Printf("%s: listening on %s with HTTPS (hostname %s)", service, addr, host)
		err = srv.ListenAndServeTLS(certFile, keyFile)
	} else {
		log.Printf("%s: listening on %s (hostname %s)", service, addr, host)
		err = srv.ListenAndServe()
	}
	if !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Printf("%s: stopped", service)
	return nil
}

func logRequests(service string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s: %s %s %s from %s", service, r.Method, r.URL.RequestURI(), r.Proto, r.RemoteAddr)
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func get(url string) error {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func lookup(host string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return err
	}
	sort.Strings(addrs)
	fmt.Println(strings.Join(addrs, "\n"))
	return nil
}
