# NixOS module: services.nix-cache-proxy runs the cache as a hardened
# systemd service with a dynamic user, its cache in /var/lib (StateDirectory),
# secrets loaded with LoadCredential, and the config checked at build time.
{ packageFor }:
{ config, lib, pkgs, ... }:

let
  cfg = config.services.nix-cache-proxy;
  common = import ./common.nix { inherit lib pkgs; };
  stateDirectory = "/var/lib/nix-cache-proxy";
in
{
  options.services.nix-cache-proxy = common.options { defaultPackage = packageFor pkgs; inherit stateDirectory; } // {
    # NixOS only: nix-darwin has no firewall option to open (deploy/README.md
    # says how to allow the binary in the macOS application firewall).
    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the port of `settings.http.listen` in the firewall, for the LAN's clients.";
    };
  };

  config = lib.mkIf cfg.enable {
    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ (common.listenPort cfg) ];
    warnings = lib.optional (cfg.openFirewall && builtins.elem (common.listenHost cfg) [ "localhost" "127.0.0.1" "[::1]" ]) ''
      services.nix-cache-proxy.openFirewall opens port ${toString (common.listenPort cfg)}, but settings.http.listen
      (${cfg.settings.http.listen}) answers this host only: listen on 0.0.0.0 or [::] for the LAN.
    '';

    systemd.services.nix-cache-proxy = {
      description = "nix-cache-proxy: LAN binary cache for Nix";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];

      # [[warm]] runs nix as the service's user: nix on the PATH, and a
      # home and cache of its own (the dynamic user has neither) for its
      # fetcher and evaluation caches.
      path = lib.mkIf (cfg.warm != [ ]) [ config.nix.package ];
      environment = lib.mkIf (cfg.warm != [ ]) {
        HOME = "%C/nix-cache-proxy";
        XDG_CACHE_HOME = "%C/nix-cache-proxy";
      };

      serviceConfig = {
        CacheDirectory = lib.mkIf (cfg.warm != [ ]) "nix-cache-proxy";
        # %d is $CREDENTIALS_DIRECTORY: the secrets are readable by this
        # service only, and their paths, not their contents, are in argv.
        ExecStart = lib.escapeShellArgs ([ (lib.getExe cfg.package) "serve" "--config" "${common.configFile cfg}" ]
          ++ common.secretFlags cfg (_: s: _: "%d/${s.credential}"));
        LoadCredential = lib.concatLists (lib.mapAttrsToList (name: s:
          lib.optional (cfg.${name} != null) "${s.credential}:${cfg.${name}}") common.secrets);

        Restart = "on-failure";
        RestartSec = 5;
        # SIGTERM lets in-flight responses finish for --shutdown-timeout (30s).
        TimeoutStopSec = 45;

        DynamicUser = true;
        StateDirectory = "nix-cache-proxy";
        StateDirectoryMode = "0750";
        # A cache-dir elsewhere must exist and be writable by the dynamic
        # user: the simpler way to use another disk is to mount it at
        # /var/lib/private/nix-cache-proxy.
        ReadWritePaths = lib.mkIf (cfg.settings.disk.cache-dir != stateDirectory) [ cfg.settings.disk.cache-dir ];
        # One open file per NAR being served or fetched, at LAN fan-out.
        LimitNOFILE = 65536;

        # The hardening of nixpkgs' harmonia and nix-serve modules.
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateMounts = true;
        PrivateUsers = true;
        DeviceAllow = [ "" ];
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        # Go's runtime raises RLIMIT_NOFILE at start (@resources stays
        # allowed); a call outside the set fails with EPERM, not SIGSYS.
        SystemCallFilter = [ "@system-service" "~@privileged" ];
        SystemCallErrorNumber = "EPERM";
        SystemCallArchitectures = "native";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        MemoryDenyWriteExecute = true;
        LockPersonality = true;
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        ProtectClock = true;
        ProtectControlGroups = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RemoveIPC = true;
        UMask = "0027";
      };
    };
  };
}
