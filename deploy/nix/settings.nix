# What the server modules (nixos.nix, darwin.nix) add to the config file's
# keys (config-keys.nix, generated from the binary): their own defaults,
# narrower types, the secret files, and the documented example. Plain Nix
# with no nixpkgs `lib`, so deploy's tests evaluate it with nix-instantiate
# and run every default, example and secret flag through
# `nix-cache-proxy check-config`.
{
  # Defaults that differ from the binary's, by section; stateDirectory is
  # where the platform keeps the cache.
  defaults = stateDirectory: {
    http.listen = "0.0.0.0:5575";
    disk.cache-dir = stateDirectory;
  };

  # More to say about a key than the binary's one-line description.
  notes = {
    http.listen = "The modules' default answers the whole LAN; `openFirewall` (NixOS) opens its port.";
    disk.cache-dir = ''
      Only one process may hold it: admin commands on the same host talk to the running server
      instead.
    '';
    upstream.trusted-public-keys = ''
      The proxy does not re-sign unless `secretKeyFile` is set: clients must trust these keys too
      (the client module's `publicKeys`).
    '';
    disk.pins = "Such as a Linux builder's disk image.";
  };

  # Types narrower than the binary's table says (a string there): `enum`
  # is one of `values`, `address` is host:port as Go's net.Listen takes it.
  types = {
    http.listen.type = "address";
    log.format = { type = "enum"; values = [ "text" "json" ]; };
    log.level = { type = "enum"; values = [ "debug" "info" "warn" "error" ]; };
    disk.recompress = { type = "enum"; values = [ "auto" "zstd" "off" ]; };
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
    upstream.urls = [ "https://mycache.cachix.org" "https://cache.nixos.org" ];
    upstream.trusted-public-keys = [
      "mycache.cachix.org-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
      "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
    ];
    disk.pins = [ "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-rosetta-builder.img" ];
    disk.max-size = "200GiB";
    disk.keep-latest = [ "*rosetta-builder*=2" ];
    misses.negative-ttl = "30s";
    http.metrics-listen = "127.0.0.1:9575";
    log.format = "json";
  };
}
