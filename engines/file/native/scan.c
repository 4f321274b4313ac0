/*
 * pfscan: one directory listed and lstat'ed in one call, on the libuv thread
 * pool. The backup walk needs every entry's metadata; through node:fs that is
 * one readdir plus one lstat per entry, each a round trip from JavaScript
 * (and each a BigIntStats object). Here the whole directory costs one round
 * trip, the syscalls run off the main thread, and several directories can be
 * scanned at once, which keeps several requests in flight on a cold device.
 *
 *   scan(path) -> Promise<{ errno, names: Buffer, stats: Float64Array }>
 *
 * errno != 0: the directory could not be opened or read (names/stats empty).
 * names: entry names, each followed by a NUL, in directory order ("." and ".."
 * left out). stats: FIELDS doubles per entry, in the same order (see below;
 * field 0 is the entry's lstat errno, 0 when it succeeded). Every value fits
 * a double exactly; the inode number is split into two 32-bit halves.
 *
 * Also: xattrs (the extended attributes of some paths, on the thread pool:
 * incrementals read those of their changed entries), setTimes (exact restore times), seekData (the holes of sparse files,
 * so that backups do not read them), copy and zero (memcpy/memset on typed
 * arrays: V8 moves bytes of SharedArrayBuffers with slower relaxed atomics).
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

enum {
  F_ERRNO, F_MODE, F_UID, F_GID, F_SIZE, F_BLOCKS, F_NLINK, F_INO_HI, F_INO_LO, F_DEV, F_RDEV,
  F_ATIME_S, F_ATIME_NS, F_MTIME_S, F_MTIME_NS, F_CTIME_S, F_CTIME_NS, FIELDS
};

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *path;
  int err;
  char *names;
  size_t names_len, names_cap;
  double *stats;
  size_t count, cap;
} scan_t;

static int grow(scan_t *s, size_t name_len) {
  if (s->names_len + name_len + 1 > s->names_cap) {
    size_t cap = s->names_cap ? s->names_cap * 2 : 4096;
    while (cap < s->names_len + name_len + 1) cap *= 2;
    char *p = realloc(s->names, cap);
    if (!p) return -1;
    s->names = p;
    s->names_cap = cap;
  }
  if (s->count == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    double *p = realloc(s->stats, cap * FIELDS * sizeof(double));
    if (!p) return -1;
    s->stats = p;
    s->cap = cap;
  }
  return 0;
}

static void execute(napi_env env, void *data) {
  (void)env;
  scan_t *s = data;
  int fd = open(s->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    s->err = errno;
    return;
  }
  DIR *d = fdopendir(fd);
  if (!d) {
    s->err = errno;
    close(fd);
    return;
  }
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (!e) {
      if (errno) s->err = errno;
      break;
    }
    const char *n = e->d_name;
    if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
    size_t len = strlen(n);
    if (grow(s, len) < 0) {
      s->err = ENOMEM;
      break;
    }
    memcpy(s->names + s->names_len, n, len + 1);
    s->names_len += len + 1;
    double *f = s->stats + s->count * FIELDS;
    s->count++;
    memset(f, 0, FIELDS * sizeof(double));
    struct stat st;
    if (fstatat(fd, n, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      f[F_ERRNO] = errno;
      continue;
    }
    f[F_MODE] = st.st_mode;
    f[F_UID] = st.st_uid;
    f[F_GID] = st.st_gid;
    f[F_SIZE] = (double)st.st_size;
    f[F_BLOCKS] = (double)st.st_blocks;
    f[F_NLINK] = (double)st.st_nlink;
    f[F_INO_HI] = (double)((uint64_t)st.st_ino >> 32);
    f[F_INO_LO] = (double)((uint64_t)st.st_ino & 0xffffffffu);
    f[F_DEV] = (double)st.st_dev;
    f[F_RDEV] = (double)st.st_rdev;
    f[F_ATIME_S] = (double)st.st_atim.tv_sec;
    f[F_ATIME_NS] = (double)st.st_atim.tv_nsec;
    f[F_MTIME_S] = (double)st.st_mtim.tv_sec;
    f[F_MTIME_NS] = (double)st.st_mtim.tv_nsec;
    f[F_CTIME_S] = (double)st.st_ctim.tv_sec;
    f[F_CTIME_NS] = (double)st.st_ctim.tv_nsec;
  }
  closedir(d);
}

/* A typed array of n elements of elem bytes each, copied from src. */
static bool typed_copy(napi_env env, napi_typedarray_type type, const void *src, size_t n, size_t elem, napi_value *out) {
  napi_value ab;
  void *buf;
  if (napi_create_arraybuffer(env, n * elem, &buf, &ab) != napi_ok) return false;
  if (n) memcpy(buf, src, n * elem);
  return napi_create_typedarray(env, type, n, ab, 0, out) == napi_ok;
}

/* Settles an async call's promise with an Error carrying message. */
static void reject(napi_env env, napi_deferred deferred, const char *message) {
  napi_value msg, err;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, NULL, msg, &err);
  napi_reject_deferred(env, deferred, err);
}

/* Queues execute on the libuv pool and returns the promise that complete settles. */
static napi_value start(napi_env env, const char *label, napi_async_execute_callback execute, napi_async_complete_callback complete,
                        void *data, napi_deferred *deferred, napi_async_work *work) {
  napi_value promise, name;
  napi_create_promise(env, deferred, &promise);
  napi_create_string_utf8(env, label, NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, data, work);
  napi_queue_async_work(env, *work);
  return promise;
}

static void release(scan_t *s) {
  free(s->path);
  free(s->names);
  free(s->stats);
  free(s);
}

static void complete(napi_env env, napi_status status, void *data) {
  scan_t *s = data;
  napi_value result, v;
  if (status != napi_ok) s->err = s->err ? s->err : EINTR;
  size_t n = s->err ? 0 : s->count * FIELDS;
  bool ok = napi_create_object(env, &result) == napi_ok && napi_create_int32(env, s->err, &v) == napi_ok &&
            napi_set_named_property(env, result, "errno", v) == napi_ok &&
            napi_create_buffer_copy(env, s->err ? 0 : s->names_len, s->names, NULL, &v) == napi_ok &&
            napi_set_named_property(env, result, "names", v) == napi_ok &&
            typed_copy(env, napi_float64_array, s->stats, n, sizeof(double), &v) &&
            napi_set_named_property(env, result, "stats", v) == napi_ok;
  if (ok) napi_resolve_deferred(env, s->deferred, result);
  else reject(env, s->deferred, "pfscan: cannot build the result");
  napi_delete_async_work(env, s->work);
  release(s);
}

static napi_value scan(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  size_t len;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "scan(path): path must be a string");
    return NULL;
  }
  scan_t *s = calloc(1, sizeof(*s));
  if (!s || !(s->path = malloc(len + 1))) {
    free(s);
    napi_throw_error(env, NULL, "pfscan: out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, argv[0], s->path, len + 1, &len);
  if (strlen(s->path) != len) {
    release(s);
    napi_throw_type_error(env, NULL, "scan(path): path contains a NUL byte");
    return NULL;
  }
  return start(env, "pfscan", execute, complete, s, &s->deferred, &s->work);
}

/*
 * setTimes(target, atimeSec, atimeNsec, mtimeSec, mtimeNsec, nofollow) → 0 or errno.
 * target: a file descriptor (futimens) or a path (utimensat, AT_SYMLINK_NOFOLLOW
 * when nofollow). Node's utimes family takes times as a double of seconds,
 * which loses up to a microsecond at today's dates: these are exact.
 */
static napi_value set_times(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], result;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  struct timespec ts[2];
  int64_t v[4];
  bool nofollow = false;
  napi_valuetype t;
  if (argc < 6 || napi_typeof(env, argv[0], &t) != napi_ok || (t != napi_number && t != napi_string)) {
    napi_throw_type_error(env, NULL, "setTimes(target, aSec, aNsec, mSec, mNsec, nofollow): bad arguments");
    return NULL;
  }
  for (int i = 0; i < 4; i++) {
    if (napi_get_value_int64(env, argv[i + 1], &v[i]) != napi_ok) {
      napi_throw_type_error(env, NULL, "setTimes: times must be numbers");
      return NULL;
    }
  }
  napi_get_value_bool(env, argv[5], &nofollow);
  if (v[1] < 0 || v[1] > 999999999 || v[3] < 0 || v[3] > 999999999) {
    napi_throw_range_error(env, NULL, "setTimes: nanoseconds out of range");
    return NULL;
  }
  ts[0].tv_sec = (time_t)v[0];
  ts[0].tv_nsec = (long)v[1];
  ts[1].tv_sec = (time_t)v[2];
  ts[1].tv_nsec = (long)v[3];
  int rc;
  if (t == napi_number) {
    int32_t fd;
    napi_get_value_int32(env, argv[0], &fd);
    rc = futimens(fd, ts);
  } else {
    char path[4096];
    size_t len;
    if (napi_get_value_string_utf8(env, argv[0], path, sizeof(path), &len) != napi_ok || len >= sizeof(path) - 1 || strlen(path) != len) {
      napi_create_int32(env, ENAMETOOLONG, &result);
      return result;
    }
    rc = utimensat(AT_FDCWD, path, ts, nofollow ? AT_SYMLINK_NOFOLLOW : 0);
  }
  napi_create_int32(env, rc == 0 ? 0 : errno, &result);
  return result;
}

/*
 * seekData(fd, offset): lseek(fd, offset, SEEK_DATA), the start of the first
 * data at or after offset. -1: none (ENXIO: only a hole up to the end);
 * -2: not known (the filesystem does not say, or another error): read it.
 */
static napi_value seek_data(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  int32_t fd;
  int64_t off;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &off) != napi_ok || off < 0) {
    napi_throw_type_error(env, NULL, "seekData(fd, offset): bad arguments");
    return NULL;
  }
  off_t r = lseek(fd, (off_t)off, SEEK_DATA);
  double v = r >= 0 ? (double)r : (errno == ENXIO ? -1 : -2);
  napi_create_double(env, v, &result);
  return result;
}

/* The bytes of a typed array argument (any kind, shared or not). */
static bool bytes_of(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  napi_typedarray_type type;
  size_t length, offset;
  napi_value ab;
  void *p;
  bool is;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  if (napi_get_typedarray_info(env, v, &type, &length, &p, &ab, &offset) != napi_ok) return false;
  if (type != napi_uint8_array && type != napi_int8_array && type != napi_uint8_clamped_array) return false;
  *data = (uint8_t *)p;
  *len = length;
  return true;
}

/*
 * copy(dst, at, src): memcpy(dst + at, src, src.length). V8 copies into and
 * out of SharedArrayBuffers with relaxed atomic word moves (no vector
 * instructions), about half the speed of memcpy on data out of cache.
 */
static napi_value copy_bytes(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  uint8_t *dst, *src;
  size_t dlen, slen;
  int64_t at;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3 || !bytes_of(env, argv[0], &dst, &dlen) || napi_get_value_int64(env, argv[1], &at) != napi_ok || !bytes_of(env, argv[2], &src, &slen)) {
    napi_throw_type_error(env, NULL, "copy(dst, at, src): bad arguments");
    return NULL;
  }
  if (at < 0 || (uint64_t)at > dlen || slen > dlen - (size_t)at) {
    napi_throw_range_error(env, NULL, "copy: source does not fit");
    return NULL;
  }
  if (slen > 0) memmove(dst + at, src, slen);
  return NULL;
}

/* zero(dst): memset(dst, 0, dst.length). */
static napi_value zero_bytes(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  uint8_t *dst;
  size_t dlen;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || !bytes_of(env, argv[0], &dst, &dlen)) {
    napi_throw_type_error(env, NULL, "zero(dst): bad arguments");
    return NULL;
  }
  if (dlen > 0) memset(dst, 0, dlen);
  return NULL;
}

/*
 * xattrs(paths) -> Promise<{ counts: Int32Array, data: Buffer }>
 *
 * paths: NUL-terminated paths back to back (a symlink's own attributes are
 * read: llistxattr/lgetxattr). counts[i]: how many attributes path i has, or
 * -errno when they could not be read (ENOTSUP and ENODATA count as none).
 * data: the attributes of every path in order, each as u32 name length, the
 * name, u32 value length, the value (host byte order).
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *paths;
  size_t paths_len;
  size_t n;
  int32_t *counts;
  uint8_t *data;
  size_t data_len, data_cap;
  int err;
} xattrs_t;

static int put_bytes(xattrs_t *x, const void *p, size_t len) {
  if (x->data_len + len > x->data_cap) {
    size_t cap = x->data_cap ? x->data_cap * 2 : 4096;
    while (cap < x->data_len + len) cap *= 2;
    uint8_t *q = realloc(x->data, cap);
    if (!q) return -1;
    x->data = q;
    x->data_cap = cap;
  }
  memcpy(x->data + x->data_len, p, len);
  x->data_len += len;
  return 0;
}

/* llistxattr/lgetxattr into a growing buffer (the size can change between the two calls: ERANGE, again). */
static ssize_t read_list(const char *path, char **buf, size_t *cap) {
  for (int tries = 0; tries < 8; tries++) {
    ssize_t want = llistxattr(path, NULL, 0);
    if (want <= 0) return want;
    if ((size_t)want > *cap) {
      char *p = realloc(*buf, want);
      if (!p) { errno = ENOMEM; return -1; }
      *buf = p;
      *cap = want;
    }
    ssize_t got = llistxattr(path, *buf, *cap);
    if (got >= 0 || errno != ERANGE) return got;
  }
  errno = ERANGE;
  return -1;
}

static ssize_t read_value(const char *path, const char *name, char **buf, size_t *cap) {
  for (int tries = 0; tries < 8; tries++) {
    ssize_t want = lgetxattr(path, name, NULL, 0);
    if (want < 0) return want;
    if (want == 0) return 0;
    if ((size_t)want > *cap) {
      char *p = realloc(*buf, want);
      if (!p) { errno = ENOMEM; return -1; }
      *buf = p;
      *cap = want;
    }
    ssize_t got = lgetxattr(path, name, *buf, *cap);
    if (got >= 0 || errno != ERANGE) return got;
  }
  errno = ERANGE;
  return -1;
}

static void xattrs_execute(napi_env env, void *data) {
  (void)env;
  xattrs_t *x = data;
  char *list = NULL, *value = NULL;
  size_t list_cap = 0, value_cap = 0;
  const char *path = x->paths;
  for (size_t i = 0; i < x->n; i++, path += strlen(path) + 1) {
    ssize_t len = read_list(path, &list, &list_cap);
    if (len < 0) {
      x->counts[i] = (errno == ENOTSUP || errno == ENODATA) ? 0 : -errno;
      continue;
    }
    size_t mark = x->data_len;
    int32_t count = 0;
    for (ssize_t o = 0; o < len;) {
      const char *name = list + o;
      size_t nlen = strnlen(name, len - o);
      o += nlen + 1;
      if (nlen == 0) continue;
      ssize_t vlen = read_value(path, name, &value, &value_cap);
      if (vlen < 0) {
        if (errno == ENODATA) continue; /* removed between the list and the read */
        count = -errno;
        break;
      }
      uint32_t nl = (uint32_t)nlen, vl = (uint32_t)vlen;
      if (put_bytes(x, &nl, 4) || put_bytes(x, name, nlen) || put_bytes(x, &vl, 4) || put_bytes(x, value, vlen)) {
        x->err = ENOMEM;
        goto out;
      }
      count++;
    }
    if (count < 0) x->data_len = mark;
    x->counts[i] = count;
  }
out:
  free(list);
  free(value);
}

static void xattrs_release(xattrs_t *x) {
  free(x->paths);
  free(x->counts);
  free(x->data);
  free(x);
}

static void xattrs_complete(napi_env env, napi_status status, void *data) {
  xattrs_t *x = data;
  napi_value result, v;
  bool ok = status == napi_ok && !x->err && napi_create_object(env, &result) == napi_ok &&
            typed_copy(env, napi_int32_array, x->counts, x->n, sizeof(int32_t), &v) &&
            napi_set_named_property(env, result, "counts", v) == napi_ok &&
            napi_create_buffer_copy(env, x->data_len, x->data_len ? (void *)x->data : (void *)"", NULL, &v) == napi_ok &&
            napi_set_named_property(env, result, "data", v) == napi_ok;
  if (ok) napi_resolve_deferred(env, x->deferred, result);
  else reject(env, x->deferred, x->err == ENOMEM ? "pfscan: out of memory reading xattrs" : "pfscan: cannot build the xattr result");
  napi_delete_async_work(env, x->work);
  xattrs_release(x);
}

static napi_value xattrs(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint8_t *bytes;
  size_t len;
  if (argc < 1 || !bytes_of(env, argv[0], &bytes, &len) || (len > 0 && bytes[len - 1] != 0)) {
    napi_throw_type_error(env, NULL, "xattrs(paths): paths must be NUL-terminated paths in a Uint8Array");
    return NULL;
  }
  xattrs_t *x = calloc(1, sizeof(*x));
  if (!x || !(x->paths = malloc(len ? len : 1))) {
    free(x);
    napi_throw_error(env, NULL, "pfscan: out of memory");
    return NULL;
  }
  memcpy(x->paths, bytes, len);
  x->paths_len = len;
  for (size_t i = 0; i < len; i++) if (bytes[i] == 0) x->n++;
  if (!(x->counts = calloc(x->n ? x->n : 1, sizeof(int32_t)))) {
    xattrs_release(x);
    napi_throw_error(env, NULL, "pfscan: out of memory");
    return NULL;
  }
  return start(env, "pfxattrs", xattrs_execute, xattrs_complete, x, &x->deferred, &x->work);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn, fields;
  napi_create_function(env, "scan", NAPI_AUTO_LENGTH, scan, NULL, &fn);
  napi_set_named_property(env, exports, "scan", fn);
  napi_create_function(env, "xattrs", NAPI_AUTO_LENGTH, xattrs, NULL, &fn);
  napi_set_named_property(env, exports, "xattrs", fn);
  napi_create_function(env, "setTimes", NAPI_AUTO_LENGTH, set_times, NULL, &fn);
  napi_set_named_property(env, exports, "setTimes", fn);
  napi_create_function(env, "seekData", NAPI_AUTO_LENGTH, seek_data, NULL, &fn);
  napi_set_named_property(env, exports, "seekData", fn);
  napi_create_function(env, "copy", NAPI_AUTO_LENGTH, copy_bytes, NULL, &fn);
  napi_set_named_property(env, exports, "copy", fn);
  napi_create_function(env, "zero", NAPI_AUTO_LENGTH, zero_bytes, NULL, &fn);
  napi_set_named_property(env, exports, "zero", fn);
  napi_create_int32(env, FIELDS, &fields);
  napi_set_named_property(env, exports, "FIELDS", fields);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
