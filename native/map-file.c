/*
 * Maps a blob file read-only into a Buffer. Blobs in the store are immutable (written aside, renamed
 * into place, never rewritten), so the registry maps each once and answers every GET with a slice of
 * the mapping: no read() copy from the page cache into JavaScript buffers per request. That copy is what
 * held large-blob throughput at distribution's level; sendfile(2) does not help on loopback-like paths
 * (the receiver then copies 4 KiB page fragments), a mapping does (bench/registry).
 *
 * The mapping is undone when the Buffer is garbage-collected, so a response still being written keeps
 * it alive. Truncating a mapped file would raise SIGBUS; the store never truncates a committed blob.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

static void unmap(napi_env env, void *data, void *length) {
  (void)env;
  munmap(data, (size_t)(uintptr_t)length);
}

/* map(fd, length) -> ArrayBuffer over the file's first `length` bytes (length > 0). */
static napi_value map(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  int64_t length;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &length) != napi_ok ||
      length <= 0) {
    napi_throw_type_error(env, NULL, "map(fd, length): a file descriptor and a positive length");
    return NULL;
  }
  void *data = mmap(NULL, (size_t)length, PROT_READ, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) {
    napi_throw_error(env, "EMAP", strerror(errno));
    return NULL;
  }
  /* Start reading a cold blob from disk now, so that later writes fault less on the event loop. */
  madvise(data, (size_t)length, MADV_WILLNEED);
  napi_value buffer;
  if (napi_create_external_arraybuffer(env, data, (size_t)length, unmap, (void *)(uintptr_t)length, &buffer) != napi_ok) {
    munmap(data, (size_t)length);
    napi_throw_error(env, NULL, "map: cannot wrap the mapping");
    return NULL;
  }
  return buffer;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "map", NAPI_AUTO_LENGTH, map, NULL, &fn);
  napi_set_named_property(env, exports, "map", fn);
  return exports;
}
