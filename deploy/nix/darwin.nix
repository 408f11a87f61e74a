# nix-darwin module: services.nix-cache-proxy runs the cache as a launchd
# daemon under its own _nix-cache-proxy user and group (nix-darwin's
# knownUsers convention), logs in /var/log, the cache in /var/lib, and the
# config checked at build time as on NixOS.
{ packageFor }:
{ config, lib, pkgs, ... }:

let
  cfg = config.services.nix-cache-proxy;
  common = import ./common.nix { inherit lib pkgs; };
  user = "_nix-cache-proxy";
  stateDirectory = "/var/lib/nix-cache-proxy";
in
{
  options.services.nix-cache-proxy = common.options { defaultPackage = packageFor pkgs; inherit stateDirectory; } // {
    uid = lib.mkOption {
      type = lib.types.int;
      default = 575;
      description = ''
        UID of the `_nix-cache-proxy` user, in the 5xx range nix-darwin's
        own service users take (its `_prometheus-node-exporter` is 534);
        the user is hidden from the login window by `IsHidden`, not by its
        UID. Pick a free one if 575 is taken (`dscl . -list /Users UniqueID`).
      '';
    };
    gid = lib.mkOption {
      type = lib.types.int;
      default = 575;
      description = "GID of the `_nix-cache-proxy` group (`dscl . -list /Groups PrimaryGroupID`).";
    };
    logFile = lib.mkOption {
      type = lib.types.str;
      default = "/var/log/nix-cache-proxy.log";
      description = ''
        Where the daemon's output goes. launchd does not rotate it: add an
        entry to /etc/newsyslog.d if it grows.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    # No home: nix-darwin aborts activation when an existing user's home
    # differs from the configured one, so a home that followed cache-dir
    # would make moving the cache impossible. The daemon works in
    # WorkingDirectory; the user's home is /var/empty.
    users.users.${user} = {
      uid = cfg.uid;
      gid = cfg.gid;
      shell = "/usr/bin/false";
      isHidden = true;
      description = "nix-cache-proxy daemon";
    };
    users.groups.${user} = {
      gid = cfg.gid;
      description = "nix-cache-proxy daemon";
    };
    users.knownUsers = [ user ];
    users.knownGroups = [ user ];

    # After nix-darwin creates the user, before launchd (re)starts the
    # daemon: the cache dir and log file must belong to it, since it never
    # runs as root. (mkdir's -m with -p would apply to the last directory
    # only: nix-darwin's shellcheck of the script refuses it, SC2174.)
    system.activationScripts.launchd.text = lib.mkBefore ''
      echo >&2 "setting up nix-cache-proxy..."
      /bin/mkdir -p ${lib.escapeShellArg cfg.settings.disk.cache-dir}
      /bin/chmod 0750 ${lib.escapeShellArg cfg.settings.disk.cache-dir}
      /usr/sbin/chown ${user}:${user} ${lib.escapeShellArg cfg.settings.disk.cache-dir}
      /usr/bin/touch ${lib.escapeShellArg cfg.logFile}
      /usr/sbin/chown ${user}:${user} ${lib.escapeShellArg cfg.logFile}
    '';

    # nix-darwin's `command` runs it as /bin/sh -c "/bin/wait4path
    # /nix/store && exec …": at boot launchd may start the daemon before the
    # Nix volume is mounted.
    launchd.daemons.nix-cache-proxy.command = lib.escapeShellArgs (
      [ (lib.getExe cfg.package) "serve" "--config" "${common.configFile cfg}" ]
      # Secret files are passed by path: make them readable by the
      # _nix-cache-proxy group only (chown root:_nix-cache-proxy, chmod 640).
      ++ common.secretFlags cfg (_: _: path: path));
    # [[warm]] runs nix as _nix-cache-proxy, whose home is /var/empty:
    # nix on the PATH, and a home and cache for it in the cache dir (which
    # the user owns; verify looks only at its nar/ and tmp/).
    launchd.daemons.nix-cache-proxy.path = lib.mkIf (cfg.warm != [ ]) [ config.nix.package ];
    launchd.daemons.nix-cache-proxy.environment = lib.mkIf (cfg.warm != [ ]) {
      HOME = "${cfg.settings.disk.cache-dir}/nix-home";
      XDG_CACHE_HOME = "${cfg.settings.disk.cache-dir}/nix-home/.cache";
    };
    launchd.daemons.nix-cache-proxy.serviceConfig = {
      Label = "org.nix-cache-proxy";
      UserName = user;
      GroupName = user;
      RunAtLoad = true;
      KeepAlive = true;
      # Back off after a crash instead of respawning at once.
      ThrottleInterval = 10;
      # SIGTERM lets in-flight responses finish for --shutdown-timeout (30s).
      ExitTimeOut = 45;
      WorkingDirectory = cfg.settings.disk.cache-dir;
      StandardOutPath = cfg.logFile;
      StandardErrorPath = cfg.logFile;
      # One open file per NAR being served or fetched; macOS's default soft
      # limit for daemons is 256.
      SoftResourceLimits.NumberOfFiles = 65536;
      HardResourceLimits.NumberOfFiles = 65536;
      # Not "Background" (nor unset, which throttles lightly): a cache
      # serving a 2 GB image to the LAN must not have its disk I/O
      # throttled.
      ProcessType = "Interactive";
    };
  };
}
