// Package tunneltest has in-memory fakes of tunnel.Device and
// tunnel.Underlay, for testing the code that drives them (the forwarding
// loops) without root, TUN devices or sockets.
//
// [Device] is a TUN device whose kernel side is the test: Inject hands it a
// packet that Read then returns, and every packet Write takes comes out of
// Written. [Network] is a UDP network: each [Underlay] it hands out gets
// the datagrams Written to its address, in order, and datagrams to an
// address nobody listens on vanish, as UDP's do.
//
// Both copy packets where they cross between the test and the code under
// test, so neither side can change bytes the other holds. Both follow the
// tunnel package's contract: batched Reads that return what is ready
// without waiting to fill a batch, Writes that go on past a refused
// packet, and Close that unblocks a pending Read, which then returns an
// error matching tunnel.ErrClosed (net.ErrClosed). One goroutine may Read
// while another Writes; other methods are safe from any goroutine.
//
// Unlike the real ones, the fakes allocate per packet; benchmark with the
// real ones.
package tunneltest
