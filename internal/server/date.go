package server

import (
	"net/http"
	"sync/atomic"
	"time"
)

// cachedDate is the Date header for one second. net/http formats it anew
// for every response that lacks one, a few percent of a narinfo hit's CPU.
type cachedDate struct {
	sec int64
	hdr []string
}

var lastDate atomic.Pointer[cachedDate]

// httpDate returns the Date header value for now, formatted at most once a
// second; the slice is shared and must not be modified.
func httpDate() []string {
	now := time.Now()
	if d := lastDate.Load(); d != nil && d.sec == now.Unix() {
		return d.hdr
	}
	d := &cachedDate{sec: now.Unix(), hdr: []string{now.UTC().Format(http.TimeFormat)}}
	lastDate.Store(d)
	return d.hdr
}
