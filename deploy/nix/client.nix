# Client module for NixOS and nix-darwin: nix-cache-proxy.client points this
# machine's Nix at the LAN cache through nix.settings (the system nix.conf),
# which, unlike a flake's nixConfig, applies to every user without
# trusted-users or accept-flake-config. With roaming, Nix is pointed at a
# relay on loopback instead, which client-darwin.nix (a launchd daemon) and
# client-nixos.nix (a systemd unit) run.
{ packageFor }:
{ config, lib, pkgs, ... }:

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

    roaming = mkOption {
      type = types.bool;
      default = false;
      description = ''
        For laptops that leave the LAN: run `nix-cache-proxy relay` on
        this machine and list it, not `url`, in `extra-substituters`. The
        relay forwards to `url` while it is reachable and answers at once
        while it is not, so Nix never waits for `connectTimeout` away from
        the LAN (docs/relay.md). Desktops need not.
      '';
    };

    relay = {
      listen = mkOption {
        type = types.str;
        default = "127.0.0.1:5576";
        description = "With `roaming`, where the relay listens (keep it on loopback).";
      };
      discover = mkOption {
        type = types.bool;
        default = false;
        description = ''
          With `roaming`, also use caches advertised on the LAN over
          DNS-SD/Bonjour (a server with `advertise-mdns`), after `url`. With
          `publicKeys` set, only caches that advertise one of them.
        '';
      };
      package = mkOption {
        type = types.package;
        default = packageFor pkgs;
        defaultText = lib.literalExpression "nix-cache-proxy built with this system's pkgs";
        description = "The nix-cache-proxy package the relay runs.";
      };
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
      extra-substituters = [ (if cfg.roaming then "http://${cfg.relay.listen}" else cfg.url) ];
      extra-trusted-public-keys = lib.mkIf (cfg.publicKeys != [ ]) cfg.publicKeys;
      # Defaults the machine's own configuration may override.
      connect-timeout = lib.mkDefault cfg.connectTimeout;
      fallback = lib.mkDefault cfg.fallback;
      narinfo-cache-negative-ttl = lib.mkDefault cfg.narinfoCacheNegativeTtl;
    };
  };
}
