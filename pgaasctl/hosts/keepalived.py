"""keepalived's configuration for a pair's virtual IP.

VRRP unicast between the two nodes, both BACKUP with no preemption, so the address stays where it is until its
holder stops being eligible. Eligibility is the guard's track file (pgaasctl/hosts/guard.py): 0 only on a node
that is a primary and not fenced. A standby or a stale primary is in FAULT and never holds the address, so after
a partition heals keepalived cannot hand it back to a stale primary.

Priority is 100 plus the node's timeline (the guard's second file), so when a partition heals and both nodes
advertise at once, the one promoted last keeps the address: VRRP settles a tie by address, not by data.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

ADVERT_INTERVAL = 0.1  # seconds (VRRPv3): the address moves 0.3-1.0 s after its holder loses eligibility


def router_id(vip: IPv4Address, subnet: IPv4Network) -> int:
    """VRRP's virtual router id (1-255), which must differ between pairs on one network: from the VIP's offset
    in the subnet, unique for the VIPs of a /24."""
    return (int(vip) - int(subnet.network_address)) % 255 + 1


def keepalived_conf(pair: str, node: str, address: str, peers: list[str], vip: IPv4Address, subnet: IPv4Network,
                    track_file: str, timeline_file: str, interface: str = "eth0") -> str:
    peer_lines = "".join(f"        {peer}\n" for peer in peers)
    return (
        "# written by pgaasctl: the virtual IP of pair " + pair + " (see pgaasctl/hosts/keepalived.py)\n"
        "global_defs {\n"
        f"    router_id {pair}-{node}\n"
        "    vrrp_garp_master_delay 0\n"
        "    vrrp_garp_master_repeat 3\n"
        "}\n"
        "track_file primary_not_fenced {\n"
        f"    file \"{track_file}\"\n"
        "    weight 0\n"
        "}\n"
        "track_file timeline {\n"
        f"    file \"{timeline_file}\"\n"
        "    weight 1\n"
        "}\n"
        f"vrrp_instance {pair} {{\n"
        "    state BACKUP\n"
        "    nopreempt\n"
        f"    interface {interface}\n"
        f"    virtual_router_id {router_id(vip, subnet)}\n"
        "    priority 100\n"
        "    version 3\n"
        f"    advert_int {ADVERT_INTERVAL}\n"
        f"    unicast_src_ip {address}\n"
        "    unicast_peer {\n"
        f"{peer_lines}"
        "    }\n"
        "    virtual_ipaddress {\n"
        f"        {vip}/{subnet.prefixlen} dev {interface}\n"
        "    }\n"
        "    track_file {\n"
        "        primary_not_fenced\n"
        "        timeline\n"
        "    }\n"
        "}\n"
    )
