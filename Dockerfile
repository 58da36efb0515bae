# The image deploy/kube-vxrouter.yml runs: vxrouter and what its node
# calls on the host (iptables and nftables for --ip-masq; iproute2 to look
# around from `kubectl exec`).
#
#   podman build -t vxrouter:latest .      (or docker build, or buildah bud)
FROM docker.io/library/golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# No cgo: the binary runs on any glibc or none.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/vxrouter .

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
	&& apt-get install -y --no-install-recommends iptables nftables iproute2 ca-certificates \
	&& rm -rf /var/lib/apt/lists/*
COPY --from=build /out/vxrouter /usr/local/bin/vxrouter
ENTRYPOINT ["/usr/local/bin/vxrouter"]
CMD ["run", "--kube-subnet-mgr"]
