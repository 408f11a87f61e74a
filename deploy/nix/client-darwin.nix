# nix-darwin client: client.nix, and with roaming the relay as a launchd
# daemon. nix-darwin's `command` starts it as /bin/sh -c "/bin/wait4path
# /nix/store && exec …": at boot launchd may start it before the Nix
# volume is mounted.
{ packageFor }:
{ config, lib, ... }:

let
  cfg = config.nix-cache-proxy.client;
  logFile = "/var/log/nix-cache-proxy-relay.log";
in
{
  imports = [ (import ./client.nix { inherit packageFor; }) ];

  config = lib.mkIf (cfg.enable && cfg.roaming) {
    # The relay runs as nobody; launchd opens its log as that user.
    system.activationScripts.launchd.text = lib.mkBefore ''
      /usr/bin/touch ${logFile}
      /usr/sbin/chown nobody ${logFile}
    '';
    launchd.daemons.nix-cache-proxy-relay = {
      command = lib.escapeShellArgs (import ./relay.nix { inherit lib cfg; });
      serviceConfig = {
        Label = "org.nix-cache-proxy.relay";
        UserName = "nobody";
        RunAtLoad = true;
        KeepAlive = true;
        ThrottleInterval = 10;
        StandardOutPath = logFile;
        StandardErrorPath = logFile;
        # Nix waits on it: not throttled like a background job.
        ProcessType = "Adaptive";
      };
    };
  };
}
