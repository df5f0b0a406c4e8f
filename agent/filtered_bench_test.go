package agent

import (
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
)

// BenchmarkFilteredSteal sends requests through serveFiltered on
// keep-alive connections, half of them matching the session's filter: the
// agent's cost per request, for profiling (go test -bench
// FilteredSteal -cpuprofile).
func BenchmarkFilteredSteal(b *testing.B) {
	front := filteredSetup(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
	// Before the setup's cleanup, which waits for its connections to end.
	b.Cleanup(client.CloseIdleConnections)
	var n atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			req, _ := http.NewRequest("GET", "http://"+front+"/item/"+strconv.FormatInt(i, 10), nil)
			req.Header.Set("X-Req-Id", strconv.FormatInt(i, 10))
			if i%2 == 0 {
				req.Header.Set("X-User", "alice")
			}
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
