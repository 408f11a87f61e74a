# What the server modules (nixos.nix, darwin.nix) generate and document for
# nix-cache-proxy, as plain Nix with no nixpkgs `lib`: CI cannot fetch
# nixpkgs, but it can evaluate this file with nix-instantiate and run every
# key and flag through `nix-cache-proxy check-config` (deploy/deploy_test.go),
# so the modules and the binary's flags cannot drift apart.
rec {
  # Settings given a typed, documented option under `settings`; any other
  # key of `nix-cache-proxy serve -h` may be set too (the settings are
  # freeform). `type` names a lib.types type, or is "enum" (one of
  # `values`) or "address" (host:port); `default` may refer to the
  # module's stateDirectory.
  options = stateDirectory: {
    listen = {
      type = "address";
      default = "0.0.0.0:5575";
      description = ''
        Address to serve the cache (and `/metrics`, `/healthz`) on. The
        default answers the whole LAN; `openFirewall` opens its port.
      '';
    };
    cache-dir = {
      type = "str";
      default = stateDirectory;
      description = ''
        Directory for the NAR files, temp files and the `index.db`. Only one
        process may hold it: admin commands on the same host talk to the
        running server instead.
      '';
    };
    upstream = {
      type = "listOf str";
      default = [ "https://cache.nixos.org" ];
      description = ''
        Upstream caches, in priority order: on a miss the first is asked,
        the next when it says not-found, errors or takes over 500 ms.
      '';
    };
    trusted-public-key = {
      type = "listOf str";
      default = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
      description = ''
        Keys whose signature makes an upstream narinfo acceptable (the
        upstreams' keys, e.g. your cachix cache's). The proxy does not
        re-sign unless `secretKeyFile` is set: clients must trust these
        keys too (the client module's `publicKeys`).
      '';
    };
    pin = {
      type = "listOf str";
      default = [ ];
      description = ''
        Store paths kept forever with their closures and prefetched at every
        start, such as a Linux builder's disk image.
      '';
    };
    negative-ttl = {
      type = "str";
      default = "1m";
      description = ''
        How long "no upstream has this path" is remembered (Go duration,
        `0` turns it off). Keep it short: a path pushed to cachix should
        be found soon after.
      '';
    };
    min-free = {
      type = "str";
      default = "1GiB";
      description = ''
        Free space to keep on the cache's file system (`500MB`, `10GiB`):
        under it the least recently used NARs are evicted, and `/readyz`
        answers 503 while it cannot be kept.
      '';
    };
    max-size = {
      type = "str";
      default = "0";
      description = ''
        Bound on the cache's size, NAR files plus index (`200GiB`): past
        it the least recently used NARs are evicted (pins, their closures
        and `keep-latest` stay). `0`: no bound but `min-free`.
      '';
    };
    keep-latest = {
      type = "listOf str";
      default = [ ];
      description = ''
        `GLOB=K` rules: of the cached store paths whose name matches GLOB,
        the K seen most recently are kept with their closures, like pins
        (`"*rosetta-builder*=2"` keeps the current builder image and the
        one before).
      '';
    };
    log-format = {
      type = "enum";
      values = [ "text" "json" ];
      default = "text";
      description = "`text` or `json`.";
    };
  };

  # Secrets: files given by path, never put in the Nix store or argv. On
  # NixOS they are loaded with systemd's LoadCredential (under the name
  # given here) and passed to the flag as a path in $CREDENTIALS_DIRECTORY;
  # on nix-darwin the flag gets the path itself.
  secrets = {
    netrcFile = {
      flag = "netrc-file";
      credential = "netrc";
      description = ''
        netrc file with upstream credentials, read as Nix reads its
        `netrc-file` (a private cachix cache: `machine mycache.cachix.org
        password <token>`).
      '';
    };
    adminTokenFile = {
      flag = "admin-token-file";
      credential = "admin-token";
      description = ''
        File holding the bearer token of the admin API (`/_/`). Without it
        the admin API answers local requests only.
      '';
    };
    writeTokenFile = {
      flag = "write-token-file";
      credential = "write-token";
      description = ''
        File holding the token uploads (`nix copy --to http://…`) must
        carry (at least 16 characters, e.g. `openssl rand -hex 32`).
        Uploads are off without it.
      '';
    };
    secretKeyFile = {
      flag = "secret-key-file";
      credential = "secret-key";
      description = ''
        Nix secret signing key (`nix key generate-secret`,
        `nix-cache-proxy keygen`): uploads and narinfos pulled with a
        valid signature by a trusted key are also signed by it, so clients
        may trust the proxy's key alone. A narinfo the proxy did not check
        (with verification of signatures off) is served without it.
      '';
    };
  };

  # The settings example shown in the modules' documentation.
  example = {
    upstream = [ "https://mycache.cachix.org" "https://cache.nixos.org" ];
    trusted-public-key = [
      "mycache.cachix.org-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
      "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
    ];
    pin = [ "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-rosetta-builder.img" ];
    negative-ttl = "30s";
    max-size = "200GiB";
    keep-latest = [ "*rosetta-builder*=2" ];
    metrics-listen = "127.0.0.1:9575";
    log-format = "json";
  };

  # Where each setting, named as its flag, lives in the config file, whose
  # keys are in sections (docs/configuration.md; deploy's TestModuleSections
  # keeps this in step with the binary). The modules' `settings` are flat,
  # by flag name; toSections writes them into their sections. A key not
  # listed here (a section of its own, or a typo) is written as it is, and
  # check-config takes or refuses it.
  sections = {
    listen = [ "http" "listen" ];
    metrics-listen = [ "http" "metrics-listen" ];
    pprof-listen = [ "http" "pprof-listen" ];
    max-connections = [ "http" "max-connections" ];
    write-stall-timeout = [ "http" "write-stall-timeout" ];
    shutdown-timeout = [ "http" "shutdown-timeout" ];
    priority = [ "http" "priority" ];
    log-level = [ "log" "level" ];
    log-format = [ "log" "format" ];
    upstream = [ "upstream" "urls" ];
    trusted-public-key = [ "upstream" "trusted-public-keys" ];
    verify-signatures = [ "upstream" "verify-signatures" ];
    netrc-file = [ "upstream" "netrc-file" ];
    upstream-timeout = [ "upstream" "timeout" ];
    upstream-straggle = [ "upstream" "straggle" ];
    upstream-failure-threshold = [ "upstream" "failure-threshold" ];
    upstream-backoff-max = [ "upstream" "backoff-max" ];
    upstream-error-status = [ "upstream" "error-status" ];
    fetch-connections = [ "upstream" "fetch-connections" ];
    cache-dir = [ "disk" "cache-dir" ];
    max-size = [ "disk" "max-size" ];
    min-free = [ "disk" "min-free" ];
    prune-after = [ "disk" "prune-after" ];
    recompress = [ "disk" "recompress" ];
    keep-latest = [ "disk" "keep-latest" ];
    pin = [ "disk" "pins" ];
    negative-ttl = [ "misses" "negative-ttl" ];
    miss-recheck = [ "misses" "recheck" ];
    miss-recheck-max = [ "misses" "recheck-max" ];
    miss-log-max = [ "misses" "log-max" ];
    prefetch-concurrency = [ "misses" "prefetch-concurrency" ];
    write-token-file = [ "uploads" "write-token-file" ];
    upload-max-size = [ "uploads" "max-size" ];
    evict-uploads = [ "uploads" "evict" ];
    secret-key-file = [ "signing" "secret-key-file" ];
    admin-token = [ "admin" "token" ];
    admin-token-file = [ "admin" "token-file" ];
    storage = [ "fleet" "storage" ];
    advertise-url = [ "fleet" "advertise-url" ];
    fleet-interval = [ "fleet" "interval" ];
    fill-lease-ttl = [ "fleet" "fill-lease-ttl" ];
    evict-grace = [ "fleet" "evict-grace" ];
  };

  # The flat settings in the sections of the config file.
  toSections = settings:
    let
      put = acc: name:
        let
          to = sections.${name} or null;
          v = settings.${name};
        in
        if to == null then acc // { ${name} = if builtins.isAttrs v then (acc.${name} or { }) // v else v; }
        else
          let section = builtins.elemAt to 0; in
          acc // { ${section} = (acc.${section} or { }) // { ${builtins.elemAt to 1} = settings.${name}; }; };
    in
    builtins.foldl' put { } (builtins.attrNames settings);
}
