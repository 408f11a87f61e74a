# Client module for NixOS and nix-darwin: nix-cache-proxy.client points this
# machine's Nix at the LAN cache through nix.settings (the system nix.conf),
# which, unlike a flake's nixConfig, applies to every user without
# trusted-users or accept-flake-config.
{ config, lib, ... }:

let
  inherit (lib) mkOption types;
  cfg = config.nix-cache-proxy.client;
in
{
  options.nix-cache-proxy.client = {
    enable = lib.mkEnableOption "substituting from a nix-cache-proxy on the LAN";

    url = mkOption {
      type = types.str;
      example = "http://cache.lan:5575";
      description = ''
        The proxy's URL, added to `extra-substituters`. Nix asks
        substituters in the order of their `Priority` (the proxy
        advertises 30, cache.nixos.org 40), so the LAN is asked first.
      '';
    };

    publicKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "mycache.cachix.org-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" ];
      description = ''
        Added to `extra-trusted-public-keys`. The proxy passes the
        upstreams' signatures through, so list the keys of the upstreams it
        serves (your cachix cache's; cache.nixos.org's is trusted by
        default), or the proxy's own key when it signs with
        `secretKeyFile`. Without a trusted signature Nix refuses a path.
      '';
    };

    connectTimeout = mkOption {
      type = types.ints.unsigned;
      default = 3;
      description = ''
        `connect-timeout` in seconds: a laptop away from the LAN waits this
        long for the proxy before moving on, instead of Nix's default of
        curl's 300 s. It applies to every substituter.
      '';
    };

    fallback = mkOption {
      type = types.bool;
      default = true;
      description = ''
        `fallback`: build from source when no substituter can deliver a
        path, instead of failing, so a down proxy slows builds rather than
        breaking them.
      '';
    };

    narinfoCacheNegativeTtl = mkOption {
      type = types.ints.unsigned;
      default = 60;
      description = ''
        `narinfo-cache-negative-ttl` in seconds. Nix remembers a 404 for an
        hour by default, so a Mac that asked for a path (say the Linux
        builder's image) before it was pushed would not ask again for an
        hour, even after the proxy's miss watcher pulled it in. A minute
        matches the proxy's first re-check; the cost is one extra narinfo
        request per missing path per minute, which the LAN cache answers
        from its own negative cache. It applies to every substituter.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    # It writes nix.settings, which do nothing when the system does not
    # manage Nix (nix.enable = false, as with Determinate Nix).
    assertions = [{
      assertion = config.nix.enable;
      message = ''
        nix-cache-proxy.client.enable needs nix.enable: it sets nix.settings, which are not
        written when the system does not manage Nix (Determinate Nix). Put the settings in
        /etc/nix/nix.custom.conf instead: extra-substituters = ${cfg.url}
      '';
    }];

    nix.settings = {
      extra-substituters = [ cfg.url ];
      extra-trusted-public-keys = lib.mkIf (cfg.publicKeys != [ ]) cfg.publicKeys;
      # Defaults the machine's own configuration may override.
      connect-timeout = lib.mkDefault cfg.connectTimeout;
      fallback = lib.mkDefault cfg.fallback;
      narinfo-cache-negative-ttl = lib.mkDefault cfg.narinfoCacheNegativeTtl;
    };
  };
}
