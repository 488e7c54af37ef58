# Parley: all four daemons and parleyctl in one image; docker-compose.yml picks the command.
FROM debian:12 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
      libzmq3-dev libczmq-dev libmsgpack-dev libcurl4-openssl-dev libjansson-dev \
      libsqlite3-dev libmicrohttpd-dev libcmocka-dev zlib1g-dev python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
 && cmake --build build -j "$(nproc)" \
 && cmake --install build --prefix /opt/parley

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libzmq5 libczmq4 libmsgpackc2 libcurl4 \
      libjansson4 libsqlite3-0 libmicrohttpd12 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/parley --create-home parley \
 && install -d -o parley -g parley -m 0700 /var/lib/parley-keys
COPY --from=build /opt/parley/bin/ /usr/local/bin/
COPY config/ /etc/parley/
USER parley
WORKDIR /var/lib/parley
CMD ["parley-broker"]
