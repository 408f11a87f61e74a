# NixOS client: client.nix, and with roaming the relay as a systemd unit
# with a dynamic user; it needs no file and no privilege, only the network
# (netlink for the network changes it watches, multicast to discover).
{ packageFor }:
{ config, lib, ... }:

let
  cfg = config.nix-cache-proxy.client;
in
{
  imports = [ (import ./client.nix { inherit packageFor; }) ];

  config = lib.mkIf (cfg.enable && cfg.roaming) {
    systemd.services.nix-cache-proxy-relay = {
      description = "nix-cache-proxy relay: the LAN cache while reachable, an at-once answer while not";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      serviceConfig = {
        ExecStart = lib.escapeShellArgs (import ./relay.nix { inherit lib cfg; });
        DynamicUser = true;
        Restart = "always";
        RestartSec = 5;
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_NETLINK" "AF_UNIX" ];
        CapabilityBoundingSet = "";
        SystemCallArchitectures = "native";
        MemoryDenyWriteExecute = true;
        LockPersonality = true;
      };
    };
  };
}
