# The sections and keys of nix-cache-proxy's config file, for the modules'
# typed settings (common.nix). Generated from docs/configuration.md (itself
# generated from the binary) by deploy's TestConfigKeysNix; rewrite it with
#   UPDATE=1 go test ./deploy -run TestConfigKeysNix
# Edit the flags and config types in cmd/proxy, not this file.
{
  sections = {
    http = "the listeners and the clients' connections";
    log = "the log on stderr";
    upstream = "the caches a miss is fetched from, and what is trusted from them";
    disk = "the cache dir, its bound and what stays in it";
    misses = "paths no upstream had: how long they are remembered and re-asked";
    uploads = "`nix copy --to` into the proxy";
    signing = "the proxy's own signature on the narinfos it serves";
    admin = "the admin API under /_/ and the admin commands";
    fleet = "several proxies sharing one S3 bucket";
  };

  keys = {
    http = {
      listen = {
        type = "string";
        flag = "listen";
        default = "`\"127.0.0.1:5575\"`";
        description = "address to serve on; 0.0.0.0:5575 for the LAN";
      };
      metrics-listen = {
        type = "string";
        flag = "metrics-listen";
        default = "none";
        description = "also serve /metrics on this address (it is always on the main listener too)";
      };
      pprof-listen = {
        type = "string";
        flag = "pprof-listen";
        default = "none";
        description = "serve Go's profiles (/debug/pprof/) on this address, e.g. 127.0.0.1:6060; off by default";
      };
      max-connections = {
        type = "integer";
        flag = "max-connections";
        default = "`4096`";
        description = "client connections open at once; more wait in the kernel's queue (0: no bound)";
      };
      write-stall-timeout = {
        type = "duration";
        flag = "write-stall-timeout";
        default = "`\"1m\"`";
        description = "cut a client that accepts no response bytes for this long (0: never); a slow download that keeps moving is never cut";
      };
      shutdown-timeout = {
        type = "duration";
        flag = "shutdown-timeout";
        default = "`\"30s\"`";
        description = "how long shutdown (SIGINT, SIGTERM) and a reload (SIGHUP) wait for in-flight responses";
      };
      priority = {
        type = "integer";
        flag = "priority";
        default = "`30`";
        description = "the Priority advertised in nix-cache-info (lower is preferred)";
      };
      advertise-mdns = {
        type = "boolean";
        flag = "advertise-mdns";
        default = "`false`";
        description = "advertise the cache on the LAN over DNS-SD/Bonjour (_nix-cache._tcp, with its public keys), for relays that discover caches (docs/relay.md); needs a --listen the LAN reaches";
      };
    };

    log = {
      level = {
        type = "string";
        flag = "log-level";
        default = "`\"info\"`";
        description = "level of the least important lines logged: debug, info, warn or error";
      };
      format = {
        type = "string";
        flag = "log-format";
        default = "`\"text\"`";
        description = "format of the log lines: text or json";
      };
    };

    upstream = {
      urls = {
        type = "list of strings";
        flag = "upstream";
        default = "`[\"https://cache.nixos.org\"]`";
        description = "upstream cache URL, repeatable, in priority order";
      };
      trusted-public-keys = {
        type = "list of strings";
        flag = "trusted-public-key";
        default = "`[\"cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\"]`";
        description = "NAME:BASE64 key whose signature makes an upstream narinfo trusted, repeatable";
      };
      verify-signatures = {
        type = "boolean";
        flag = "verify-signatures";
        default = "`true`";
        description = "refuse upstream narinfos not signed by a trusted key";
      };
      netrc-file = {
        type = "string";
        flag = "netrc-file";
        default = "none";
        description = "netrc file with upstream credentials, as Nix's netrc-file";
      };
      timeout = {
        type = "duration";
        flag = "upstream-timeout";
        default = "`\"10s\"`";
        description = "bound for an upstream narinfo request or a NAR's response headers";
      };
      straggle = {
        type = "duration";
        flag = "upstream-straggle";
        default = "`\"1s\"`";
        description = "once every other upstream has answered a lookup, how long after asking it an upstream may still take before it counts as failing (0: wait for --upstream-timeout)";
      };
      failure-threshold = {
        type = "integer";
        flag = "upstream-failure-threshold";
        default = "`3`";
        description = "upstream requests failing in a row (timeouts, connection errors, 5xx) after which that upstream is skipped until a probe or trial finds it back";
      };
      backoff-max = {
        type = "duration";
        flag = "upstream-backoff-max";
        default = "`\"30s\"`";
        description = "longest wait before a skipped upstream is tried again (the wait starts at 1s and doubles)";
      };
      error-status = {
        type = "integer";
        flag = "upstream-error-status";
        default = "`404`";
        description = "status for a lookup failed by upstream errors: 404 lets Nix move on, 502 shows the failure";
      };
      fetch-connections = {
        type = "integer";
        flag = "fetch-connections";
        default = "`4`";
        description = "ranged connections that fetch one NAR of 64 MiB or more at once from an upstream that accepts ranges (1: one stream)";
      };
    };

    disk = {
      cache-dir = {
        type = "string";
        flag = "cache-dir";
        default = "`$XDG_CACHE_HOME/nix-cache-proxy`, else `~/.cache/nix-cache-proxy`";
        description = "directory for NAR files and the index";
      };
      max-size = {
        type = "size";
        flag = "max-size";
        default = "`0` (none)";
        description = "bound on the cache's size, NAR files plus index (200GiB, 500MB): past it the least recently used NARs are evicted; 0: no bound but --min-free. With s3 storage, the bound on the bucket's NAR objects, kept by one proxy at a time";
      };
      min-free = {
        type = "size";
        flag = "min-free";
        default = "`\"1GiB\"`";
        description = "free disk size (10GiB, 500MB) to keep: under it the least recently used NARs are evicted, and /readyz answers 503 while it cannot be kept; with s3 storage only the cache dir's (index and spool): never a reason to delete from the bucket";
      };
      prune-after = {
        type = "duration";
        flag = "prune-after";
        default = "`\"720h\"`";
        description = "how long a narinfo whose NAR was evicted stays in the index neither served nor stored before it and its origin record are pruned; 0: never. The default is Nix's narinfo-cache-positive-ttl, 30 days: keep it at least the clients' setting";
      };
      recompress = {
        type = "string";
        flag = "recompress";
        default = "`\"auto\"`";
        description = "auto, zstd or off (mode): zstd serves NARs of 64 KiB or more fetched as xz, bzip2 or none as zstd, recompressed once in the background while the clients pause; auto is zstd on local disk, off with --storage s3://";
      };
      keep-latest = {
        type = "list of strings";
        flag = "keep-latest";
        default = "none";
        description = "GLOB=K: of the cached store paths whose name matches GLOB, keep the K first seen most recently, with their closures, like pins; repeatable";
      };
      pins = {
        type = "list of strings";
        flag = "pin";
        default = "none";
        description = "STORE_PATH kept forever with its closure and prefetched at start, repeatable";
      };
    };

    misses = {
      negative-ttl = {
        type = "duration";
        flag = "negative-ttl";
        default = "`\"1m\"`";
        description = "how long a path no upstream has is remembered as missing (0 turns it off)";
      };
      recheck = {
        type = "duration";
        flag = "miss-recheck";
        default = "`\"1m\"`";
        description = "first wait before re-asking upstreams about a path none had, doubling each time (0 turns it off)";
      };
      recheck-max = {
        type = "duration";
        flag = "miss-recheck-max";
        default = "`\"1h\"`";
        description = "longest wait between re-asks about a missing path";
      };
      log-max = {
        type = "integer";
        flag = "miss-log-max";
        default = "`10000`";
        description = "rows kept in the miss log, the least recently seen dropped first (0: no limit)";
      };
      prefetch-concurrency = {
        type = "integer";
        flag = "prefetch-concurrency";
        default = "`4`";
        description = "NAR downloads one prefetch job runs at once";
      };
    };

    uploads = {
      write-token-file = {
        type = "string";
        flag = "write-token-file";
        default = "none";
        description = "file holding the token that uploads (`nix copy --to`) must carry; uploads are off without it";
      };
      max-size = {
        type = "size";
        flag = "upload-max-size";
        default = "`\"64GiB\"`";
        description = "largest NAR file an upload may send, as a size (64GiB)";
      };
      evict = {
        type = "boolean";
        flag = "evict-uploads";
        default = "`false`";
        description = "let eviction delete the least recently served uploaded paths like pulled ones, narinfo with NAR (nothing can fetch them again); without it an upload leaves only when a --keep-latest rule supersedes it or by the delete command";
      };
    };

    signing = {
      secret-key-file = {
        type = "string";
        flag = "secret-key-file";
        default = "none";
        description = "Nix secret key file (nix key generate-secret, nix-cache-proxy keygen): uploads and narinfos pulled with a trusted signature are also signed by it";
      };
    };

    admin = {
      token = {
        type = "string";
        flag = "admin-token";
        default = "none";
        description = "bearer token for the admin API under /_/; without it only loopback clients may use it";
      };
      token-file = {
        type = "string";
        flag = "admin-token-file";
        default = "none";
        description = "file holding the admin token (keeps it out of argv and config files)";
      };
    };

    fleet = {
      storage = {
        type = "string";
        flag = "storage";
        default = "none";
        description = "where NAR files and narinfos live: the cache dir (default), or the URL of an S3 bucket shared by several proxies, s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&scheme=http&region=R (the index stays in the cache dir)";
      };
      advertise-url = {
        type = "string";
        flag = "advertise-url";
        default = "none";
        description = "URL where the other proxies on the same --storage bucket reach this one to join its downloads (http://10.0.0.5:5575)";
      };
      interval = {
        type = "duration";
        flag = "fleet-interval";
        default = "`\"1m\"`";
        description = "with s3 storage, how often each proxy publishes the NARs it served to the bucket and, with --max-size, tries the fleet's eviction lease";
      };
      fill-lease-ttl = {
        type = "duration";
        flag = "fill-lease-ttl";
        default = "`\"30s\"`";
        description = "with s3 storage, how long a download's lease lives unrenewed: how long a dead proxy holds up a NAR before another takes it over";
      };
      evict-grace = {
        type = "duration";
        flag = "evict-grace";
        default = "`\"1h\"`";
        description = "with s3 storage and --max-size, how long a NAR marked for eviction stays in the bucket before it is deleted, unless a proxy serves it meanwhile; longer than the longest download, and than --fill-lease-ttl";
      };
    };
  };
}
