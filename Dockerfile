# scrapegate container image: `make docker` builds it as scrapegate:dev.
#
# The builder's Go must satisfy go.mod's `go 1.26.8` line; the golang images
# set GOTOOLCHAIN=local, so an older 1.26.x fails instead of downloading one.
FROM golang:1.26 AS build
WORKDIR /src
# Modules first, in their own layer: rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# For -version and scrapegate_build_info; `make docker` passes git's. Empty,
# the binary reports what the Go toolchain recorded.
ARG VERSION
ARG REVISION
RUN CGO_ENABLED=0 go build -trimpath -o /out/scrapegate \
    -ldflags="-s -w -X github.com/scrapegate/scrapegate/gateway/buildinfo.version=${VERSION} -X github.com/scrapegate/scrapegate/gateway/buildinfo.revision=${REVISION}" \
    ./cmd/scrapegate

# Static binary on distroless: no shell, no package manager, runs as
# nonroot (UID/GID 65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/scrapegate /scrapegate
EXPOSE 8080
ENTRYPOINT ["/scrapegate"]
