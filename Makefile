# Proven Node: `make run` starts a local node, `make test` passes every test.
# Both install what is missing first (see `deps`), then build; `make` alone
# only builds, and says which packages are missing.

CC       ?= cc
BUILD    ?= build
CSTD      = -std=gnu11
WARN      = -Wall -Wextra -Werror
OPT      ?= -O2 -g
SAN      ?=
CFLAGS   += $(CSTD) $(WARN) $(OPT) $(SAN) -fPIC -D_GNU_SOURCE -Ilib -MMD -MP
LDFLAGS  += $(SAN)
PKG_CONFIG ?= pkg-config

# Libraries through pkg-config, with the plain flags when it is missing
# (then `make` says so before it compiles anything).
pkg = $(shell $(PKG_CONFIG) --libs $(1) 2>/dev/null || echo $(2))
LIBS        = $(call pkg,libcbor,-lcbor) $(call pkg,jansson,-ljansson) \
              $(call pkg,libcrypto,-lcrypto) $(call pkg,zlib,-lz)
DAEMON_LIBS = $(call pkg,sqlite3,-lsqlite3) $(call pkg,libuv,-luv) \
              $(call pkg,libcurl,-lcurl) $(call pkg,libnats,-lnats) \
              $(call pkg,libsodium,-lsodium) -lpthread
CLI_LIBS    = $(call pkg,libcurl,-lcurl)
TEST_LIBS   = $(call pkg,cmocka,-lcmocka)
NGINX_SRC ?= /usr/share/nginx/src
NGINX    ?= /usr/sbin/nginx

# Debian packages the project needs; `deps` installs those not present.
DEB_PACKAGES = nginx nginx-dev libcbor-dev libjansson-dev libuv1-dev \
    libssl-dev openssl libcmocka-dev libcurl4-openssl-dev pkg-config curl procps \
    libsqlite3-dev chromium nats-server libnats-dev zlib1g-dev libsodium-dev \
    qemu-system-x86 pebble

DEB_BENCH    = wrk redis-server redis-tools socat
DEB_FUZZ     = clang libclang-rt-14-dev

# lib/fetch (libcurl) and lib/image (zlib) are not compiled into the nginx
# modules (config).
LIB_SRCS  = $(wildcard lib/*.c lib/fetch/*.c lib/image/*.c lib/net/*.c)
LIB_OBJS  = $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
LIBPROVEN = $(BUILD)/lib/libproven.a

DAEMON_SRCS = $(wildcard daemon/*/*.c)
DAEMON_OBJS = $(DAEMON_SRCS:%.c=$(BUILD)/obj/%.o)
CLI_SRCS    = $(wildcard cli/*.c)
CLI_OBJS    = $(CLI_SRCS:%.c=$(BUILD)/obj/%.o)

TEST_SRCS   = $(wildcard tests/test_*.c)
TEST_BINS   = $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)

MODULE_SRCS = config $(wildcard src/*/*.c src/*/*.h) $(LIB_SRCS) lib/proven.h
MODULES     = $(BUILD)/modules/ngx_http_proven_core_module.so \
              $(BUILD)/modules/ngx_http_proven_attestation_module.so \
              $(BUILD)/modules/ngx_http_proven_app_module.so \
              $(BUILD)/modules/ngx_http_proven_rpc_module.so

.PHONY: all deps check-deps lib programs modules runtime sdk run cluster test \
        image \
        test-unit test-nginx test-runtime test-deps asan fuzz bench clean

all: programs modules

programs: $(BUILD)/bin/provend $(BUILD)/bin/proven $(BUILD)/bin/proven-host \
          $(BUILD)/bin/proven-relay $(BUILD)/bin/proven-egress \
          $(BUILD)/bin/proven-agent

lib: $(LIBPROVEN)

# ---- dependencies ---------------------------------------------------------

SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL = install_missing() { missing=""; \
    for p in "$$@"; do dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null \
        | grep -q 'ok installed' || missing="$$missing $$p"; done; \
    [ -z "$$missing" ] && return 0; \
    echo "installing:$$missing"; \
    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
    $(SUDO) env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
        apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }

# Node.js: the machine's own when it has one (with npm), else Debian's
# nodejs and npm.  The runtime's npm packages are pinned by
# runtime/package-lock.json; install scripts are not run.
deps:
	@$(APT_INSTALL); install_missing $(DEB_PACKAGES); \
	    if ! command -v node >/dev/null || ! command -v npm >/dev/null; \
	    then install_missing nodejs npm; fi
	@$(MAKE) --no-print-directory runtime sdk

runtime: runtime/node_modules/.stamp

runtime/node_modules/.stamp: runtime/package.json runtime/package-lock.json
	cd runtime && npm ci --ignore-scripts --no-audit --no-fund \
	    --loglevel=error
	@touch $@

# What the test suites run against from the npm registry: ganache, a
# local Ethereum chain (tests/chains.sh), and Radix's ROLA and engine
# toolkit (tests/rpc/rola.test.mjs); pinned by their locks, no install
# scripts.
test-deps: tests/chains/node_modules/.stamp tests/radix/node_modules/.stamp

tests/radix/node_modules/.stamp: tests/radix/package.json \
    tests/radix/package-lock.json
	cd tests/radix && npm ci --ignore-scripts --no-audit --no-fund \
	    --loglevel=error
	@touch $@

tests/chains/node_modules/.stamp: tests/chains/package.json \
    tests/chains/package-lock.json
	cd tests/chains && npm ci --ignore-scripts --no-audit --no-fund \
	    --loglevel=error
	@touch $@

# The client package (sdk/) and its browser build, which examples/web
# loads; its dev dependencies drive the Chromium test.
sdk: sdk/dist/proven.mjs

sdk/node_modules/.stamp: sdk/package.json sdk/package-lock.json
	cd sdk && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

sdk/dist/proven.mjs: sdk/node_modules/.stamp sdk/build.mjs sdk/src/index.mjs
	cd sdk && node build.mjs

# What `make` needs and cannot install itself: each missing package named.
# A header stands for its package (nginx-dev: its source tree).
DEB_HEADERS = libcbor-dev:/usr/include/cbor.h \
    libjansson-dev:/usr/include/jansson.h libuv1-dev:/usr/include/uv.h \
    libssl-dev:/usr/include/openssl/evp.h \
    libsqlite3-dev:/usr/include/sqlite3.h \
    libcurl4-openssl-dev:/usr/include/$(shell $(CC) -dumpmachine)/curl/curl.h \
    libnats-dev:/usr/include/nats/nats.h \
    zlib1g-dev:/usr/include/zlib.h libsodium-dev:/usr/include/sodium.h \
    libcmocka-dev:/usr/include/cmocka.h \
    nginx-dev:$(NGINX_SRC)/configure

check-deps:
	@missing=""; for d in $(DEB_HEADERS); do \
	    [ -e "$${d#*:}" ] || missing="$$missing $${d%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	    echo "make: missing Debian packages:$$missing" >&2; \
	    echo "make: \`make deps\` (or \`make run\`, \`make test\`)" \
	         "installs them" >&2; \
	    exit 1; fi

deps-bench:
	@$(APT_INSTALL); install_missing $(DEB_BENCH)

deps-fuzz:
	@$(APT_INSTALL); install_missing $(DEB_FUZZ)

# ---- C --------------------------------------------------------------------

# Header dependencies come from the compiler (-MMD -MP: the .d files).
$(BUILD)/obj/%.o: %.c | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

-include $(LIB_OBJS:.o=.d) $(DAEMON_OBJS:.o=.d) $(CLI_OBJS:.o=.d) \
    $(TEST_BINS:=.d) $(wildcard $(BUILD)/obj/relay/*.d $(BUILD)/obj/host/*.d \
    $(BUILD)/obj/agent/*.d)

# provend's subsystems include each other's headers as "subsystem/name.h".
$(DAEMON_OBJS): CFLAGS += -Idaemon

# provend finds proven-runtime where this tree keeps it (--runtime DIR).
RUNTIME_DIR ?= $(CURDIR)/runtime
$(BUILD)/obj/daemon/core/options.o: CFLAGS += -DPROVEND_RUNTIME_DIR='"$(RUNTIME_DIR)"'
$(BUILD)/obj/cli/app.o: CFLAGS += -DPROVEN_RUNTIME_DIR='"$(RUNTIME_DIR)"'

$(LIBPROVEN): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/provend: $(DAEMON_OBJS) $(LIBPROVEN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(DAEMON_OBJS) $(LIBPROVEN) $(DAEMON_LIBS) $(LIBS)

# the CLI shares provend's whole-file reads and writes (core/util.c)
CLI_SHARED = $(BUILD)/obj/daemon/core/util.o $(BUILD)/obj/daemon/core/keys.o \
             $(BUILD)/obj/daemon/core/keyd.o $(BUILD)/obj/daemon/core/log.o
$(CLI_OBJS): CFLAGS += -Idaemon

$(BUILD)/bin/proven: $(CLI_OBJS) $(CLI_SHARED) $(LIBPROVEN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJS) $(CLI_SHARED) $(LIBPROVEN) \
	    $(CLI_LIBS) $(LIBS)

$(BUILD)/bin/proven-host: $(BUILD)/obj/host/proven-host.o \
    $(BUILD)/obj/host/backup.o $(LIBPROVEN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/bin/proven-relay: $(BUILD)/obj/relay/proven-relay.o $(LIBPROVEN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/bin/proven-egress: $(BUILD)/obj/relay/proven-egress.o $(LIBPROVEN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(CLI_LIBS) $(LIBS)

$(BUILD)/bin/proven-agent: $(BUILD)/obj/agent/proven-agent.o \
    $(BUILD)/obj/agent/peers.o $(LIBPROVEN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# Unit tests may link daemon objects (all but main.o) to test providers.
DAEMON_LIB_OBJS = $(filter-out $(BUILD)/obj/daemon/core/main.o,$(DAEMON_OBJS))

$(BUILD)/tests/%: tests/%.c $(LIBPROVEN) $(DAEMON_LIB_OBJS) | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MF $@.d -Idaemon $(LDFLAGS) -o $@ $< $(DAEMON_LIB_OBJS) \
	    $(LIBPROVEN) $(TEST_LIBS) $(DAEMON_LIBS) $(LIBS)

# bench/chains: provend's checks of a chain, timed against EthereumJS's
$(BUILD)/bench/chains_proofs: bench/chains/proofs.c $(LIBPROVEN) \
    $(DAEMON_LIB_OBJS) | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MF $@.d -Idaemon $(LDFLAGS) -o $@ $< $(DAEMON_LIB_OBJS) \
	    $(LIBPROVEN) $(DAEMON_LIBS) $(LIBS)

# bench/radix: ROLA's checks, timed against Radix's own @radixdlt/rola
$(BUILD)/bench/radix_rola: bench/radix/rola.c $(LIBPROVEN) \
    $(DAEMON_LIB_OBJS) | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MF $@.d -Idaemon $(LDFLAGS) -o $@ $< $(DAEMON_LIB_OBJS) \
	    $(LIBPROVEN) $(DAEMON_LIBS) $(LIBS)

# ---- nginx modules, built against Debian's nginx-dev ---------------------

$(BUILD)/nginx/objs/Makefile: config $(LIB_SRCS) | check-deps
	rm -rf $(BUILD)/nginx && mkdir -p $(BUILD) && \
	    cp -r $(NGINX_SRC) $(BUILD)/nginx
	cd $(BUILD)/nginx && bash -c '. ./conf_flags && ./configure \
	    "$${NGX_CONF_FLAGS[@]}" --with-cc-opt="$(OPT) $(SAN) -fPIC" \
	    --with-ld-opt="$(SAN)" --add-dynamic-module=$(CURDIR)' \
	    > configure.log 2>&1 || { tail -20 configure.log; exit 1; }

$(BUILD)/modules/.stamp: $(BUILD)/nginx/objs/Makefile $(MODULE_SRCS)
	$(MAKE) -C $(BUILD)/nginx -f objs/Makefile modules >/dev/null
	@mkdir -p $(BUILD)/modules
	cp $(BUILD)/nginx/objs/ngx_http_proven_*_module.so $(BUILD)/modules/
	@touch $@

modules: $(BUILD)/modules/.stamp

# ---- the enclave image -------------------------------------------------------

# Our programs built again for the image (never with sanitizers, even from
# `make asan`, whose SAN reaches every sub-make): paths fixed (the runtime where
# the image keeps it, the checkout's path mapped away), no debug info, the
# modules against the nginx source of the lock (not the machine's
# nginx-dev), so any checkout of the same tree gives the same bytes; init
# static.
IMAGE       = build/image
IMAGE_BUILD = $(IMAGE)/build
IMAGE_TOOLS = $(IMAGE)/tools
IMAGE_OPT   = -O2 -ffile-prefix-map=$(CURDIR)=.

$(IMAGE_BUILD)/init: rootfs/init/init.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(IMAGE_OPT) -D_GNU_SOURCE -static -o $@ $<

$(IMAGE_TOOLS)/.lock: rootfs/packages.lock
	rm -rf $(IMAGE_TOOLS) $(IMAGE_BUILD)/nginx
	./rootfs/unpack.sh $(IMAGE_TOOLS) build/debs build
	@touch $@

image:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory $(IMAGE_TOOLS)/.lock
	@$(MAKE) --no-print-directory BUILD=$(IMAGE_BUILD) OPT="$(IMAGE_OPT)" \
	    SAN= NGINX_SRC=$(CURDIR)/$(IMAGE_TOOLS)/usr/share/nginx/src \
	    RUNTIME_DIR=/opt/proven/runtime programs modules $(IMAGE_BUILD)/init
	@./rootfs/build.sh $(IMAGE) $(IMAGE_BUILD)

# ---- run, test ------------------------------------------------------------

# Installs first, then builds: one after the other even under -j.
run:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all
	@./nginx-conf/run-local.sh

# Three local nodes, each with its own nginx, provend and nats-server.
cluster:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all
	@./nginx-conf/run-cluster.sh

test:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all $(TEST_BINS) test-deps
	@NGINX_PRELOAD="$(NGINX_PRELOAD)" ./t/run-all.sh $(BUILD)

test-unit: $(TEST_BINS)
	@for t in $(TEST_BINS); do $$t || exit 1; done

test-nginx: all runtime sdk
	@prove -I t/lib -r t/

test-runtime: runtime
	@cd runtime && node --experimental-vm-modules --no-warnings \
	    --test test/*.test.mjs

# Debian's nginx is not instrumented: it gets the runtimes preloaded.
asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	    NGINX_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	    test

fuzz:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory deps-fuzz
	@./fuzz/run.sh $(BUILD)

bench:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory deps-bench
	@$(MAKE) --no-print-directory all
	@./bench/attestation
	@./bench/storage
	@./bench/app/run
	@./bench/rpc/run
	@./bench/cluster/run
	@./bench/proxy/run
	@./bench/tls/run
	@$(MAKE) --no-print-directory $(BUILD)/bench/chains_proofs
	@./bench/chains/run
	@$(MAKE) --no-print-directory $(BUILD)/bench/radix_rola
	@./bench/radix/run

clean:
	rm -rf build build-asan build-fuzz t/servroot*
