package statuspage

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

//go:embed status.html
var pageSource string

// page is parsed once; html/template escapes every value it is given, so a
// store path an upstream made up cannot inject markup.
var page = template.Must(template.New("status").Funcs(funcs).Parse(pageSource))

// Options configure the Handler. Zero values mean defaults.
type Options struct {
	// Refresh is how often the page reloads itself (a meta refresh, no
	// script); default 10 s, negative for never. ?refresh=N overrides it.
	Refresh time.Duration
	// Timeout bounds reading a Snapshot; default 5 s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// maxRefresh bounds ?refresh=N, in seconds.
const maxRefresh = 3600

// Handler serves the status page from src: HTML by default, the Snapshot
// as JSON with ?format=json. It answers GET and HEAD.
func Handler(src Source, opts Options) http.Handler {
	if opts.Refresh == 0 {
		opts.Refresh = 10 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &handler{src: src, opts: opts}
}

type handler struct {
	src  Source
	opts Options
}

// view is what the template renders.
type view struct {
	*Snapshot
	Refresh int // seconds; 0: no automatic reload
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	format := q.Get("format")
	if format != "" && format != "html" && format != "json" {
		http.Error(w, "format: want html or json", http.StatusBadRequest)
		return
	}
	refresh := max(0, int(h.opts.Refresh/time.Second))
	if v := q.Get("refresh"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxRefresh {
			http.Error(w, "refresh: want seconds from 0 (off) to "+strconv.Itoa(maxRefresh), http.StatusBadRequest)
			return
		}
		refresh = n
	}

	ctx, cancel := context.WithTimeout(r.Context(), h.opts.Timeout)
	defer cancel()
	snap, err := h.src.Snapshot(ctx)
	if err != nil {
		if r.Context().Err() == nil {
			h.opts.Logger.Error("status page", "err", err)
			http.Error(w, "status unavailable", http.StatusInternalServerError)
		}
		return
	}

	var buf bytes.Buffer
	var contentType string
	if format == "json" {
		contentType = "application/json"
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		err = enc.Encode(snap)
	} else {
		contentType = "text/html; charset=utf-8"
		err = page.Execute(&buf, view{Snapshot: snap, Refresh: refresh})
	}
	if err != nil {
		h.opts.Logger.Error("status page", "format", format, "err", err)
		http.Error(w, "status unavailable", http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", contentType)
	hd.Set("Content-Length", strconv.Itoa(buf.Len()))
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	// No script, no external fetch: the page is inline CSS and nothing else.
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	if r.Method == http.MethodHead {
		return
	}
	w.Write(buf.Bytes())
}
