/*
 * File-system calls Node does not expose: hole punching, zero ranges and SEEK_DATA/SEEK_HOLE.
 * Each call runs on the libuv thread pool and returns a Promise, like fs/promises.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
#include <node_api.h>
#include "tidemark_aead.h"

enum op_kind { OP_PUNCH_HOLE, OP_ZERO_RANGE, OP_SEEK_DATA, OP_SEEK_HOLE, OP_WRITE_BATCH, OP_READ_BATCH };

/* One positional transfer of a batch. */
struct batch_item {
  uint8_t *data;
  size_t length;
  int64_t offset;
};

struct op {
  napi_async_work work;
  napi_deferred deferred;
  enum op_kind kind;
  int fd;
  int64_t offset;
  int64_t length;
  int64_t result;
  int err;
  struct batch_item *items;
  uint32_t count;
  napi_ref keep_alive; /* the JS array of buffers, so their memory outlives the work */
};

/* pwrite/pread every item fully, retrying short transfers and EINTR; stops at the first error. */
static int run_batch(struct op *op) {
  for (uint32_t i = 0; i < op->count; i++) {
    struct batch_item *item = &op->items[i];
    size_t done = 0;
    while (done < item->length) {
      ssize_t n = op->kind == OP_WRITE_BATCH
        ? pwrite(op->fd, item->data + done, item->length - done, item->offset + (off_t)done)
        : pread(op->fd, item->data + done, item->length - done, item->offset + (off_t)done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (n == 0) {
        if (op->kind == OP_WRITE_BATCH) return EIO;
        memset(item->data + done, 0, item->length - done); /* past end of file reads as zeros */
        break;
      }
      done += (size_t)n;
    }
  }
  return 0;
}

static void execute(napi_env env, void *data) {
  (void)env;
  struct op *op = data;
  op->err = 0;
  switch (op->kind) {
    case OP_PUNCH_HOLE:
      if (fallocate(op->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, op->offset, op->length) != 0) op->err = errno;
      break;
    case OP_ZERO_RANGE:
      if (fallocate(op->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, op->offset, op->length) != 0) op->err = errno;
      break;
    case OP_WRITE_BATCH:
    case OP_READ_BATCH:
      op->err = run_batch(op);
      op->result = op->count;
      break;
    case OP_SEEK_DATA:
    case OP_SEEK_HOLE: {
      off_t r = lseek(op->fd, op->offset, op->kind == OP_SEEK_DATA ? SEEK_DATA : SEEK_HOLE);
      if (r < 0) {
        if (errno == ENXIO) op->result = -1; /* no data/hole at or after offset */
        else op->err = errno;
      } else {
        op->result = r;
      }
      break;
    }
  }
}

static void complete(napi_env env, napi_status status, void *data) {
  struct op *op = data;
  if (status == napi_ok && op->err == 0) {
    napi_value value;
    napi_create_int64(env, op->result, &value);
    napi_resolve_deferred(env, op->deferred, value);
  } else {
    int err = op->err ? op->err : EIO;
    napi_value code, msg, error, errnum;
    const char *name = err == EOPNOTSUPP ? "EOPNOTSUPP" : err == EBADF ? "EBADF" : err == EINVAL ? "EINVAL"
                     : err == ENOSPC ? "ENOSPC" : err == EIO ? "EIO" : "EUNKNOWN";
    napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, strerror(err), NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &error);
    napi_create_int32(env, -err, &errnum);
    napi_set_named_property(env, error, "errno", errnum);
    napi_reject_deferred(env, op->deferred, error);
  }
  napi_delete_async_work(env, op->work);
  if (op->keep_alive) napi_delete_reference(env, op->keep_alive);
  free(op->items);
  free(op);
}

static napi_value start(napi_env env, napi_callback_info info, enum op_kind kind, size_t argc_needed) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < argc_needed) {
    napi_throw_type_error(env, NULL, "missing arguments");
    return NULL;
  }
  struct op *op = calloc(1, sizeof *op);
  if (!op) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  op->kind = kind;
  napi_get_value_int32(env, argv[0], &op->fd);
  napi_get_value_int64(env, argv[1], &op->offset);
  if (argc_needed > 2) napi_get_value_int64(env, argv[2], &op->length);
  napi_value promise, name;
  napi_create_promise(env, &op->deferred, &promise);
  napi_create_string_utf8(env, "tidemark_fs", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, op, &op->work);
  napi_queue_async_work(env, op->work);
  return promise;
}

/* (fd, buffers: Uint8Array[], offsets: number[]) → Promise<count> */
static napi_value start_batch(napi_env env, napi_callback_info info, enum op_kind kind) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t count = 0, offsets_count = 0;
  if (argc < 3 || napi_get_array_length(env, argv[1], &count) != napi_ok ||
      napi_get_array_length(env, argv[2], &offsets_count) != napi_ok || count != offsets_count) {
    napi_throw_type_error(env, NULL, "expected (fd, buffers[], offsets[]) of equal length");
    return NULL;
  }
  struct op *op = calloc(1, sizeof *op);
  struct batch_item *items = calloc(count ? count : 1, sizeof *items);
  if (!op || !items) {
    free(op);
    free(items);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  op->kind = kind;
  op->items = items;
  op->count = count;
  napi_get_value_int32(env, argv[0], &op->fd);
  for (uint32_t i = 0; i < count; i++) {
    napi_value buffer, offset;
    napi_typedarray_type type;
    size_t length;
    void *data;
    napi_get_element(env, argv[1], i, &buffer);
    napi_get_element(env, argv[2], i, &offset);
    if (napi_get_typedarray_info(env, buffer, &type, &length, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) {
      free(items);
      free(op);
      napi_throw_type_error(env, NULL, "buffers must be Uint8Arrays");
      return NULL;
    }
    items[i].data = data;
    items[i].length = length;
    napi_get_value_int64(env, offset, &items[i].offset);
  }
  napi_create_reference(env, argv[1], 1, &op->keep_alive);
  napi_value promise, name;
  napi_create_promise(env, &op->deferred, &promise);
  napi_create_string_utf8(env, "tidemark_fs_batch", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, op, &op->work);
  napi_queue_async_work(env, op->work);
  return promise;
}

static napi_value write_batch(napi_env env, napi_callback_info info) { return start_batch(env, info, OP_WRITE_BATCH); }
static napi_value read_batch(napi_env env, napi_callback_info info) { return start_batch(env, info, OP_READ_BATCH); }

static napi_value punch_hole(napi_env env, napi_callback_info info) { return start(env, info, OP_PUNCH_HOLE, 3); }
static napi_value zero_range(napi_env env, napi_callback_info info) { return start(env, info, OP_ZERO_RANGE, 3); }
static napi_value seek_data(napi_env env, napi_callback_info info) { return start(env, info, OP_SEEK_DATA, 2); }
static napi_value seek_hole(napi_env env, napi_callback_info info) { return start(env, info, OP_SEEK_HOLE, 2); }


/* CRC-32C (Castagnoli) with the SSE4.2 instruction where the CPU has it, a table otherwise.
 * Same result as src/core/lib/crc32c.ts (reflected, initial and final inversion). */
static uint32_t crc_table[256];

static void crc_table_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    crc_table[i] = c;
  }
}

static uint32_t crc_soft(uint32_t crc, const uint8_t *p, size_t n) {
  while (n--) crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>
__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n) {
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = (uint32_t)c;
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
static int have_hw = -1;
#endif

static napi_value crc32c(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (argc < 1 || napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "crc32c needs a Uint8Array");
    return NULL;
  }
  uint32_t initial = 0;
  if (argc > 1) napi_get_value_uint32(env, argv[1], &initial);
  uint32_t crc = ~initial;
#if defined(__x86_64__)
  if (have_hw < 0) have_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
  crc = have_hw ? crc_hw(crc, data, length) : crc_soft(crc, data, length);
#else
  crc = crc_soft(crc, data, length);
#endif
  napi_value result;
  napi_create_uint32(env, ~crc, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  crc_table_init();
  napi_property_descriptor props[] = {
    {"punchHole", NULL, punch_hole, NULL, NULL, NULL, napi_default, NULL},
    {"zeroRange", NULL, zero_range, NULL, NULL, NULL, napi_default, NULL},
    {"seekData", NULL, seek_data, NULL, NULL, NULL, napi_default, NULL},
    {"seekHole", NULL, seek_hole, NULL, NULL, NULL, napi_default, NULL},
    {"writeBatch", NULL, write_batch, NULL, NULL, NULL, napi_default, NULL},
    {"readBatch", NULL, read_batch, NULL, NULL, NULL, napi_default, NULL},
    {"crc32c", NULL, crc32c, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  register_aead(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
