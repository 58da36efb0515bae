#!/bin/sh
# capture.sh regenerates kernel.pcap: VXLAN datagrams made by the Linux
# kernel's vxlan driver, set up the way flannel's vxlan backend sets it up
# (see README.md). Run as root from this directory: sh capture.sh
# Needs iproute2, iputils ping, tcpdump and tshark.
set -eu

A=vxrcap-a
B=vxrcap-b
MAC_A=b6:bf:4c:81:cf:3b
MAC_B=d6:51:2e:80:5c:69
TMP=$(mktemp -d)

cleanup() {
	[ -f "$TMP/tcpdump.pid" ] && kill "$(cat "$TMP/tcpdump.pid")" 2>/dev/null || true
	ip netns del $A 2>/dev/null || true
	ip netns del $B 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

ip netns add $A
ip netns add $B
# The underlay: one veth pair, 10.0.0.1 (A) <-> 10.0.0.2 (B).
ip link add veth0 netns $A type veth peer name veth1 netns $B
ip -n $A addr add 10.0.0.1/24 dev veth0
ip -n $B addr add 10.0.0.2/24 dev veth1
for ns in $A $B; do
	ip -n $ns link set lo up
done
ip -n $A link set veth0 up
ip -n $B link set veth1 up

# node <ns> <underlay ip> <underlay dev> <vtep mac> <vtep v4> <vtep v6> <pod v4> <pod v6>
node() {
	ip -n "$1" link add flannel.1 type vxlan id 1 local "$2" dev "$3" dstport 8472 nolearning
	ip -n "$1" link set flannel.1 address "$4"
	# No link-local address: keeps router solicitations and MLD out of the capture.
	ip -n "$1" link set flannel.1 addrgenmode none
	ip -n "$1" addr add "$5/32" dev flannel.1
	ip -n "$1" addr add "$6/128" dev flannel.1 nodad
	ip -n "$1" link set flannel.1 up
	# The pod addresses; on lo they stand in for a pod behind cni0.
	ip -n "$1" addr add "$7/32" dev lo
	ip -n "$1" addr add "$8/128" dev lo nodad
}
# route <ns> <peer v4 subnet> <peer vtep v4> <peer v6 subnet> <peer vtep v6> <peer mac> <peer underlay ip>
route() {
	ip -n "$1" route add "$2" via "$3" dev flannel.1 onlink
	ip -n "$1" neigh add "$3" lladdr "$6" dev flannel.1 nud permanent
	ip -n "$1" -6 route add "$4" via "$5" dev flannel.1 onlink
	ip -n "$1" -6 neigh add "$5" lladdr "$6" dev flannel.1 nud permanent
	bridge -n "$1" fdb add "$6" dev flannel.1 dst "$7"
}
node $A 10.0.0.1 veth0 $MAC_A 172.16.99.0 fd00:16:99:: 172.16.99.8 fd00:16:99::8
node $B 10.0.0.2 veth1 $MAC_B 172.16.57.0 fd00:16:57:: 172.16.57.15 fd00:16:57::15
route $A 172.16.57.0/24 172.16.57.0 fd00:16:57::/64 fd00:16:57:: $MAC_B 10.0.0.2
route $B 172.16.99.0/24 172.16.99.0 fd00:16:99::/64 fd00:16:99:: $MAC_A 10.0.0.1

ip netns exec $B tcpdump -n -U --immediate-mode -i veth1 -w "$TMP/all.pcap" udp port 8472 2>"$TMP/tcpdump.err" &
echo $! >"$TMP/tcpdump.pid"
# Wait until tcpdump is listening, or the first ping is lost to the race.
i=0
until grep -q listening "$TMP/tcpdump.err"; do
	i=$((i + 1))
	[ $i -gt 50 ] && { cat "$TMP/tcpdump.err"; exit 1; }
	sleep 0.1
done

ip netns exec $A ping -n -c1 -W2 -s 56 -I 172.16.99.8 172.16.57.15
ip netns exec $A ping -n -c1 -W2 -s 56 -I fd00:16:99::8 fd00:16:57::15
sleep 0.5
kill "$(cat "$TMP/tcpdump.pid")"
wait || true
cat "$TMP/tcpdump.err"
rm -f "$TMP/tcpdump.pid"

# Keep only the echo requests and replies (v4 and v6), in capture order.
tshark -r "$TMP/all.pcap" -d udp.port==8472,vxlan \
	-Y 'icmp.type == 8 || icmp.type == 0 || icmpv6.type == 128 || icmpv6.type == 129' \
	-F pcap -w kernel.pcap.tmp
mv kernel.pcap.tmp kernel.pcap
tshark -r kernel.pcap -d udp.port==8472,vxlan
