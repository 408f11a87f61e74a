// Package reqid carries a request's id in its context, so the lines the
// cache logs on a request's behalf (upstream fetches, refused answers) can
// be matched with the server's line for that request. Work a request starts
// and others join (one upstream lookup or NAR download for many clients)
// carries the id of the request that started it.
package reqid

import (
	"context"
	"log/slog"
)

type key struct{}

// With returns ctx carrying id.
func With(ctx context.Context, id uint64) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// From returns the id ctx carries, or 0 (the proxy's own work: prefetch
// jobs, the miss watcher).
func From(ctx context.Context) uint64 {
	id, _ := ctx.Value(key{}).(uint64)
	return id
}

// Attr is the request_id log attribute for id; for 0 it is the empty
// attribute, which slog handlers leave out.
func Attr(id uint64) slog.Attr {
	if id == 0 {
		return slog.Attr{}
	}
	return slog.Uint64("request_id", id)
}
