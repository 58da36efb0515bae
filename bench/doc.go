// Package bench measures overlay data planes against each other on one
// machine, in one run: the bare underlay, the kernel's vxlan as flannel
// programs it, and vxrouter with each of its TUN backends. It is what
// `vxrouter bench` runs. It needs root.
//
// # What is measured
//
// Every scenario is a fresh lab topology (see package lab): an underlay
// bridge, two hosts on it, one pod on each, traffic from pod A on node1 to
// pod B on node2, so every packet crosses both hosts' forwarding and, for
// the overlays, is encapsulated on one and decapsulated on the other:
//
//   - underlay: no overlay at all; each host routes the other's pod subnet
//     via the other's underlay address (flannel's host-gw). Same hops,
//     no encapsulation: the ceiling.
//   - kernel-vxlan: flannel.1 on both hosts with static peers, exactly as
//     flannel's vxlan backend programs it. The baseline every ratio uses.
//   - vxrouter-water, vxrouter-offload: a vxrouter node on each host
//     (`vxrouter run --tun-backend water|offload`), leases in an embedded
//     etcd reached over a unix socket.
//   - vxrouter-to-kernel, kernel-to-vxrouter: one overlay of a vxrouter
//     node (offload) and a kernel-vxlan node programmed as flannel does,
//     the latter with a lease in etcd as flanneld takes one; the client
//     pod on the first named. Every device keeps its default offloads, so
//     the kernel node's checksums arrive pending and its TSO packets
//     whole: interop at speed, with its retransmits beside the rest.
//
// The traffic generator is in this package, so nothing needs installing.
// Sockets are opened inside the pods' namespaces (lab.Pod.Do) and driven
// from goroutines of this process; a socket stays in the namespace it was
// made in. The tests, in order:
//
//   - tcp1, tcp4: one or four TCP connections; the client writes 128 KiB
//     at a time for --duration, then closes; the server reads until end
//     of file. Gbit/s = bytes the server read / time from the first write
//     to the last end of file (data still queued at the end counts, and so
//     does the time to drain it). With --iperf3 these come from iperf3 -J.
//   - cost: one TCP connection as in tcp1, its client socket paced to
//     --cost-rate with SO_MAX_PACING_RATE (TCP paces by itself since
//     Linux 4.13, no fq qdisc needed), for --duration: the same load in
//     every scenario, below saturation, to measure what it costs (see
//     below). Gbit/s is what it achieved, which should be the pace. It
//     always uses the bench's own generator, also with --iperf3.
//   - udp64, udp1400: datagrams of that payload sent with sendmmsg, 64 a
//     call, as fast as the sending socket takes them, for --duration; the
//     receiver (8 MiB buffer, recvmmsg) counts those that arrive. kpps is
//     received per second of sending; loss is the share that never arrived.
//     A sender at full speed shares the two cores with the data plane, so
//     this is what gets through under overload, not a loss-free rate.
//   - latency: a 64-byte UDP ping-pong, one outstanding, 2000 round trips
//     after 20 unmeasured ones; p50 and p99 by nearest rank. It includes
//     this process's own wake-ups at both ends, the same in every scenario.
//   - retransmits: segments the TCP senders sent again (TCP_INFO), lost
//     or taken for lost because they came out of order.
//
// The TCP tests and the cost test are also measured for what they cost,
// in CPU seconds per GB (1e9 bytes) the server received, read the same
// way in every scenario:
//
//   - machine CPU: the whole machine's busy time over the test, all CPUs'
//     user+nice+system+irq+softirq from the aggregate line of /proc/stat
//     (not idle, iowait or steal). That is everything on the box: both
//     traffic ends (this process, or iperf3), the kernel's softirqs where
//     its vxlan and its forwarding run, the routers, and whatever else
//     runs at the time, which is why the bench wants a quiet machine.
//   - overlay CPU: machine CPU less the underlay scenario's in the same
//     test (the medians); the underlay's own is 0. The underlay moves the
//     same bytes over the same hops without encapsulation, so what is
//     left is what the overlay adds: a cost per GB that does not depend
//     on how many CPUs the machine has or what else shares them, so it
//     travels between machines, and the kernel's vxlan and vxrouter can
//     be compared on it. Without the underlay in the run there is none.
//     Noise can put a cheap overlay's figure a little below zero; it then
//     has no ratio.
//   - router CPU: the vxrouter processes' user+system time alone
//     (/proc/<pid>/stat): two nodes, one in the mixed scenarios
//     vxrouter-to-kernel and kernel-to-vxrouter. The kernel's data
//     planes do their work in softirq context, charged to no process:
//     "-". It says how much of the overlay's cost is the router's own;
//     the rest is the kernel's work for it (TUN, UDP) and the waking.
//
// That holds while the machine has CPU to spare, and compares data planes
// only at equal load: so compare them on the cost test's rows. The tcp1
// and tcp4 tests send as fast as they can, and on a small machine they
// keep every CPU busy: their machine CPU per GB is then NumCPU × the
// test's length / bytes, the inverse of the throughput, which other work
// on the machine raises as it lowers the throughput, and their overlay
// CPU inherits that. Those rows stay in the table and the JSON; the chart
// shows only the cost test's CPU. The table says how busy the machine was
// in the TCP tests (from the raw clocks below) and, per scenario, in the
// cost test. A scenario whose paced stream fell below 90% of the pace, or
// that had the machine 95% busy or more all the same (other work on it,
// or a data plane at its limit), has its cost figures marked "*": they are
// at saturation too (and every overlay figure when the underlay's are).
// The router CPU, charged to the processes, has no such ceiling.
//
// The default pace, 1 Gbit/s, is the most a round figure can be while
// every data plane reaches it with room to spare on two CPUs:
// vxrouter-water, the slowest, moves about 1.5 Gbit/s flat out there,
// vxrouter-offload about 6, the kernel's vxlan about 12. A higher pace
// divides the CPU by more bytes, so the 10 ms ticks and other work weigh
// less; a pace that a data plane cannot reach measures it flat out. Where
// the path keeps up, the goodput is within a percent of the pace (on
// Linux 6.18 over the underlay: 0.1% from 100 Mbit/s to 1 Gbit/s).
//
// Each round's values keep the raw clocks behind these: per test the
// window the CPU was read over (tcp1_cpu_window_s), the machine's busy
// seconds in it (tcp1_machine_busy_s) and that as a share of all its
// CPUs' time (tcp1_machine_busy_pct), and the routers' CPU seconds
// (tcp1_router_cpu_s).
//
// # How to read it
//
// Each figure is the median over --rounds rounds. The rounds run
// round-robin, each starting one scenario further on, so a machine that
// slowly speeds up or slows down favours none. The ratio is scenario /
// kernel-vxlan: above 1 is better for throughput and packet rates, below
// 1 is better for round trips and CPU. On a small machine everything
// competes for the same cores (both routers, both generator ends, the
// kernel's softirqs), so the absolute numbers move with the machine; the
// ratios, and the cost test's overlay CPU per GB where it is not marked
// "*", are what travels. DESIGN.md lists what other data planes
// reach on such a machine.
//
// # Failures and cleanup
//
// A scenario that cannot be built (a node that exits at start, say, for a
// flag its binary lacks) or a test that fails is recorded in the Report
// with its error and the tail of the nodes' logs, and the run goes on
// with the rest. Each vxrouter node's "data plane" log line (backend,
// queues, UDP GSO/GRO) becomes a note of its scenario, with a warning
// when the backend is not the one asked for (offload falls back to water
// where the kernel refuses offloads). Every topology is torn down after its tests, also on
// failure and when the context is cancelled (Ctrl-C): nodes stopped with
// SIGTERM, namespaces deleted (lab.Close kills whatever still runs in
// them), etcd stopped, its directory removed. Leftovers from a killed run
// are removed by the next run with the same prefix, or by hand:
//
//	for ns in $(ip netns list | awk '/^vxrbench-/ {print $1}'); do
//		ip netns pids $ns | xargs -r kill -9; ip netns del $ns
//	done
//
// # Use
//
//	rep, err := bench.Run(ctx, bench.Options{Quick: true}, os.Stderr)
//	rep.WriteTable(os.Stdout)
//
// Run is not safe to call concurrently with the same Prefix. The
// Measure functions can be used on any pair of lab pods.
package bench
