# Every library comes through pkg-config; a missing one stops configure with the
# Debian package that provides it (deploy/install-deps.sh installs them all).
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: apt-get install pkg-config (or run deploy/install-deps.sh)")
endif()

function(turnout_require var module debpkg)
  pkg_check_modules(${var} IMPORTED_TARGET ${module})
  if(NOT ${var}_FOUND)
    message(FATAL_ERROR "library '${module}' not found: apt-get install ${debpkg} "
                        "(or run deploy/install-deps.sh)")
  endif()
endfunction()

turnout_require(LIBEVENT libevent libevent-dev)
turnout_require(LIBEVENT_PTHREADS libevent_pthreads libevent-dev)
turnout_require(LIBEVENT_OPENSSL libevent_openssl libevent-dev)
turnout_require(LIBCURL libcurl libcurl4-openssl-dev)
turnout_require(JANSSON jansson libjansson-dev)
turnout_require(OPENSSL openssl libssl-dev)
turnout_require(YAML yaml-0.1 libyaml-dev)
turnout_require(PROTOBUFC libprotobuf-c libprotobuf-c-dev)

find_program(PROTOC_C NAMES protoc-c)
if(NOT PROTOC_C)
  message(FATAL_ERROR "protoc-c not found: apt-get install protobuf-c-compiler")
endif()
set(TURNOUT_ONNX_PROTO "/usr/include/onnx/onnx.proto" CACHE FILEPATH "onnx.proto from libonnx-dev")
if(NOT EXISTS ${TURNOUT_ONNX_PROTO})
  message(FATAL_ERROR "${TURNOUT_ONNX_PROTO} not found: apt-get install libonnx-dev")
endif()

set(THREADS_PREFER_PTHREAD_FLAG ON)
find_package(Threads REQUIRED)

if(BUILD_TESTING OR NOT DEFINED BUILD_TESTING)
  pkg_check_modules(CMOCKA IMPORTED_TARGET cmocka)
  if(NOT CMOCKA_FOUND)
    message(FATAL_ERROR "cmocka not found: apt-get install libcmocka-dev (or configure with -DBUILD_TESTING=OFF)")
  endif()
endif()
