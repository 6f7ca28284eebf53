/*
 * ndmpd._speedups: the per-file hot loops of the tar and dump engines, in C.
 *
 * Why: a 4 KiB file costs GNU tar about 5 us, nearly all of it system calls; the same work
 * driven from Python costs 15-25 us, which caps small-file backup and restore far below GNU
 * tar. These functions take over only the common case, and stop at anything else:
 *
 *   tar_scan / dump_scan   parse a run of plain regular-file members out of a stream buffer
 *                          (no allocation but the result tuples);
 *   write_files            create a batch of restored files from that buffer, with the GIL
 *                          released (O_TMPFILE + linkat, so no name shows a partial file);
 *   tar_pack_files         read a batch of small files of one directory straight into the
 *                          output buffer as pax members, GIL released while reading.
 *
 * Every "stop" hands the member back, untouched, to the Python engine, which stays the one
 * place where format rules, confinement and error reporting live. The Python paths are the
 * reference: tests run both and compare. Nothing here is required: ndmpd runs without it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef O_TMPFILE
#define O_TMPFILE 0
#endif
#ifndef AT_EMPTY_PATH
#define AT_EMPTY_PATH 0
#endif

#define BLOCK 512
#define NS 1000000000LL

/* scan status codes, mirrored in ndmpd/engines/native.py */
enum { ST_STOP = 0, ST_NEED = 1, ST_LIMIT = 2, ST_END = 3 };

/* ------------------------------------------------------------------------------------------ */
/* tar                                                                                         */

/* An octal field as GNU tar writes it: leading spaces, digits, then NUL/space/end. Returns -1
 * for anything else (base-256, junk), which sends the member to the Python reader. */
static long long octal(const unsigned char *f, int n)
{
    int i = 0;
    long long v = 0;
    int digits = 0;
    if (n > 0 && (f[0] & 0x80))
        return -1;
    while (i < n && f[i] == ' ')
        i++;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
        if (v > (LLONG_MAX >> 3))
            return -1;
        v = (v << 3) | (f[i] - '0');
        digits++;
    }
    for (; i < n; i++) {
        if (f[i] == 0)
            break;
        if (f[i] != ' ')
            return -1;
    }
    return digits ? v : (i > 0 ? 0 : -1);
}

static int checksum_ok(const unsigned char *b)
{
    long long stored = octal(b + 148, 8);
    unsigned long sum = 0;
    int i;
    if (stored < 0)
        return 0;
    for (i = 0; i < BLOCK; i++)
        sum += (i >= 148 && i < 156) ? ' ' : b[i];
    return (long long)sum == stored;
}

static int all_zero(const unsigned char *b)
{
    int i;
    for (i = 0; i < BLOCK; i++)
        if (b[i])
            return 0;
    return 1;
}

/* A decimal pax value: digits only, no sign. -1 if not. */
static long long decimal(const unsigned char *s, Py_ssize_t n)
{
    long long v = 0;
    Py_ssize_t i;
    if (n <= 0 || n > 18)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* A non-negative pax time "S" or "S.F" (F up to 9 digits) in ns; -1 otherwise. */
static long long pax_time(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t dot = 0;
    long long whole, frac = 0;
    Py_ssize_t k;
    while (dot < n && s[dot] != '.')
        dot++;
    whole = decimal(s, dot);
    if (whole < 0 || whole > 9000000000LL)
        return -1;
    if (dot < n) {
        Py_ssize_t fl = n - dot - 1;
        if (fl < 1 || fl > 9)
            return -1;
        for (k = 0; k < 9; k++) {
            int d = 0;
            if (k < fl) {
                unsigned char c = s[dot + 1 + k];
                if (c < '0' || c > '9')
                    return -1;
                d = c - '0';
            }
            frac = frac * 10 + d;
        }
    }
    return whole * NS + frac;
}

static Py_ssize_t cstrlen(const unsigned char *f, Py_ssize_t n)
{
    const unsigned char *z = memchr(f, 0, (size_t)n);
    return z ? z - f : n;
}

struct pax {
    const unsigned char *path;
    Py_ssize_t pathlen;
    long long mtime, atime, uid, gid, size;
};

/* The records of an x header. 0 when every key is one the fast path knows, -1 otherwise. */
static int parse_pax(const unsigned char *p, Py_ssize_t n, struct pax *x)
{
    Py_ssize_t i = 0;
    while (i < n) {
        Py_ssize_t len = 0, j = i, eq, klen, vlen;
        const unsigned char *key, *val;
        while (j < n && p[j] >= '0' && p[j] <= '9' && j - i < 9)
            len = len * 10 + (p[j++] - '0');
        if (j == i || j >= n || p[j] != ' ' || len <= j - i || i + len > n ||
            p[i + len - 1] != '\n')
            return -1;
        key = p + j + 1;
        eq = j + 1;
        while (eq < i + len - 1 && p[eq] != '=')
            eq++;
        if (eq >= i + len - 1)
            return -1;
        klen = eq - (j + 1);
        val = p + eq + 1;
        vlen = i + len - 1 - (eq + 1);
#define KEY(s) (klen == (Py_ssize_t)sizeof(s) - 1 && memcmp(key, s, sizeof(s) - 1) == 0)
        if (KEY("path")) {
            if (vlen == 0 || memchr(val, 0, (size_t)vlen))
                return -1;
            x->path = val;
            x->pathlen = vlen;
        } else if (KEY("mtime")) {
            if ((x->mtime = pax_time(val, vlen)) < 0)
                return -1;
        } else if (KEY("atime")) {
            if ((x->atime = pax_time(val, vlen)) < 0)
                return -1;
        } else if (KEY("ctime")) {
            if (pax_time(val, vlen) < 0)
                return -1;
        } else if (KEY("uid")) {
            if ((x->uid = decimal(val, vlen)) < 0)
                return -1;
        } else if (KEY("gid")) {
            if ((x->gid = decimal(val, vlen)) < 0)
                return -1;
        } else if (KEY("size")) {
            if ((x->size = decimal(val, vlen)) < 0)
                return -1;
        } else if (!KEY("uname") && !KEY("gname")) {
            return -1;
        }
#undef KEY
        i += len;
    }
    return 0;
}

#define PAD(n) (((n) + BLOCK - 1) / BLOCK * BLOCK)

/* The result list of a scan over view[start:end]; NULL (view released) on a bad range. */
static PyObject *scan_begin(Py_buffer *view, Py_ssize_t start, Py_ssize_t end)
{
    PyObject *out;
    if (start < 0 || end > view->len || start > end) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "bad range");
        return NULL;
    }
    out = PyList_New(0);
    if (!out)
        PyBuffer_Release(view);
    return out;
}

PyDoc_STRVAR(tar_scan_doc,
"tar_scan(buf, start, end, limit, max_size) -> (members, pos, status, need)\n\n"
"Parse plain regular-file members (an optional x header with path/times/ids only, then a\n"
"'0' or NUL ustar header) from buf[start:end]. Each member is (name, mode, uid, gid,\n"
"atime_ns or -1, mtime_ns, data_offset, size). Stops before anything else.");

static PyObject *tar_scan(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, end, limit, max_size, pos, need = 0;
    int status = ST_LIMIT;
    PyObject *out;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnnn", &view, &start, &end, &limit, &max_size))
        return NULL;
    if (!(out = scan_begin(&view, start, end)))
        return NULL;
    pos = start;
    while (PyList_GET_SIZE(out) < limit) {
        const unsigned char *buf = view.buf;
        const unsigned char *h = buf + pos;
        struct pax x = {NULL, 0, -1, -1, -1, -1, -1};
        Py_ssize_t q = pos, namelen, size, data;
        long long mode, uid, gid, mtime, hsize;
        const unsigned char *name;
        unsigned char tf;
        PyObject *nm, *t;

        if (end - pos < BLOCK) {
            status = ST_NEED;
            need = BLOCK;
            break;
        }
        if (all_zero(h)) {
            status = ST_END;
            break;
        }
        if (!checksum_ok(h)) {
            status = ST_STOP;
            break;
        }
        tf = h[156];
        if (tf == 'x') {
            long long xs = octal(h + 124, 12);
            if (xs < 0 || xs > 65536) {
                status = ST_STOP;
                break;
            }
            if (end - pos < BLOCK + PAD(xs) + BLOCK) {
                status = ST_NEED;
                need = BLOCK + PAD(xs) + BLOCK;
                break;
            }
            if (parse_pax(h + BLOCK, (Py_ssize_t)xs, &x) < 0) {
                status = ST_STOP;
                break;
            }
            q = pos + BLOCK + PAD(xs);
            h = buf + q;
            if (!checksum_ok(h)) {
                status = ST_STOP;
                break;
            }
            tf = h[156];
        }
        if (tf != '0' && tf != 0) {
            status = ST_STOP;
            break;
        }
        hsize = octal(h + 124, 12);
        mode = octal(h + 100, 8);
        uid = x.uid >= 0 ? x.uid : octal(h + 108, 8);
        gid = x.gid >= 0 ? x.gid : octal(h + 116, 8);
        mtime = x.mtime >= 0 ? x.mtime : octal(h + 136, 12);
        if (hsize < 0 || mode < 0 || uid < 0 || gid < 0 || mtime < 0 || uid > 0xFFFFFFFFLL ||
            gid > 0xFFFFFFFFLL) {
            status = ST_STOP;
            break;
        }
        if (x.mtime < 0) {
            if (mtime > 9000000000LL) {
                status = ST_STOP;
                break;
            }
            mtime *= NS;
        }
        size = (Py_ssize_t)(x.size >= 0 ? x.size : hsize);
        if (size > max_size) {
            status = ST_STOP;
            break;
        }
        data = q + BLOCK;
        if (end - data < PAD(size)) {
            status = ST_NEED;
            need = data + PAD(size) - pos;
            break;
        }
        if (x.path) {
            name = x.path;
            namelen = x.pathlen;
            nm = PyBytes_FromStringAndSize((const char *)name, namelen);
        } else {
            Py_ssize_t plen = memcmp(h + 257, "ustar\0", 6) == 0 ? cstrlen(h + 345, 155) : 0;
            namelen = cstrlen(h, 100);
            if (plen) {
                nm = PyBytes_FromStringAndSize(NULL, plen + 1 + namelen);
                if (nm) {
                    char *d = PyBytes_AS_STRING(nm);
                    memcpy(d, h + 345, (size_t)plen);
                    d[plen] = '/';
                    memcpy(d + plen + 1, h, (size_t)namelen);
                }
            } else {
                nm = PyBytes_FromStringAndSize((const char *)h, namelen);
            }
        }
        if (!nm)
            goto fail;
        if (PyBytes_GET_SIZE(nm) == 0 || PyBytes_AS_STRING(nm)[PyBytes_GET_SIZE(nm) - 1] == '/') {
            Py_DECREF(nm);
            status = ST_STOP;
            break;
        }
        t = Py_BuildValue("(NiLLLLnn)", nm, (int)(mode & 07777), uid, gid, x.atime, mtime, data,
                          size);
        if (!t || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
        pos = data + PAD(size);
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(Nnin)", out, pos, status, need);
fail:
    PyBuffer_Release(&view);
    Py_DECREF(out);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* dump                                                                                        */

#define TP_BSIZE 1024
#define TP_NINDIR 512
#define NFS_MAGIC 60012
#define DUMP_CHECKSUM 84446
#define TS_INODE 2
#define TS_ADDR 4
#define DR_EXTATTRIBUTES 0x8000

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int dump_header_ok(const unsigned char *p)
{
    uint32_t sum = 0;
    int i;
    if ((int32_t)le32(p + 24) != NFS_MAGIC)
        return 0;
    for (i = 0; i < TP_BSIZE; i += 4)
        sum += le32(p + i);
    return sum == DUMP_CHECKSUM;
}

PyDoc_STRVAR(dump_scan_doc,
"dump_scan(buf, start, end, limit) -> (inodes, pos, status, need)\n\n"
"Parse TS_INODE headers of plain regular files whose data follow without holes and without\n"
"TS_ADDR or extended-attribute records. Each is (inumber, mode, uid, gid, atime_ns,\n"
"mtime_ns, data_offset, size, header_offset). Stops before anything else.");

static PyObject *dump_scan(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, end, limit, pos, need = 0;
    int status = ST_LIMIT;
    PyObject *out;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnn", &view, &start, &end, &limit))
        return NULL;
    if (!(out = scan_begin(&view, start, end)))
        return NULL;
    pos = start;
    while (PyList_GET_SIZE(out) < limit) {
        const unsigned char *h = (const unsigned char *)view.buf + pos;
        const unsigned char *n;
        uint32_t ino, count, i;
        uint64_t size;
        unsigned mode;
        Py_ssize_t next;
        long long at, mt;
        uint32_t ausec, musec;
        PyObject *t;

        if (end - pos < TP_BSIZE) {
            status = ST_NEED;
            need = TP_BSIZE;
            break;
        }
        if (!dump_header_ok(h) || le32(h) != TS_INODE || (le32(h + 888) & DR_EXTATTRIBUTES)) {
            status = ST_STOP;
            break;
        }
        mode = (unsigned)h[32] | ((unsigned)h[33] << 8);
        count = le32(h + 160);
        size = (uint64_t)le32(h + 40) | ((uint64_t)le32(h + 44) << 32);
        ino = le32(h + 20);
        if ((mode & 0170000) != 0100000 || count > TP_NINDIR ||
            size > (uint64_t)count * TP_BSIZE || (uint64_t)count * TP_BSIZE >= size + TP_BSIZE)
            {
            status = ST_STOP;
            break;
        }
        for (i = 0; i < count; i++)
            if (h[164 + i] == 0)
                break;
        if (i != count) {
            status = ST_STOP;
            break;
        }
        next = pos + TP_BSIZE + (Py_ssize_t)count * TP_BSIZE;
        if (end - next < TP_BSIZE) {
            status = ST_NEED;
            need = next - pos + TP_BSIZE;
            break;
        }
        n = (const unsigned char *)view.buf + next;
        /* the Python reader reads the next header before it commits a file: a broken one
         * means this file is not restored either */
        if (!dump_header_ok(n)) {
            status = ST_STOP;
            break;
        }
        if (le32(n + 20) == ino &&
            (le32(n) == TS_ADDR || (le32(n) == TS_INODE && (le32(n + 888) & DR_EXTATTRIBUTES)))) {
            status = ST_STOP;
            break;
        }
        ausec = le32(h + 52);
        musec = le32(h + 60);
        at = (long long)le32(h + 48) * NS + (long long)(ausec > 999999 ? 999999 : ausec) * 1000;
        mt = (long long)le32(h + 56) * NS + (long long)(musec > 999999 ? 999999 : musec) * 1000;
        t = Py_BuildValue("(kiIILLnKn)", (unsigned long)ino, (int)mode, le32(h + 144),
                          le32(h + 148), at, mt, pos + TP_BSIZE, (unsigned long long)size, pos);
        if (!t || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            PyBuffer_Release(&view);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(t);
        pos = next;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(Nnin)", out, pos, status, need);
}

PyDoc_STRVAR(dir_entries_doc,
"dir_entries(data, blksize) -> [(ino, dtype, name), ...]\n\n"
"The entries of a dump directory image, as dump.format.iter_dir yields them (a bad entry\n"
"skips the rest of its block; d_ino 0 and empty names are left out).");

static PyObject *dir_entries(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t blksize, blk, end;
    const unsigned char *d;
    PyObject *out;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*n", &view, &blksize))
        return NULL;
    if (blksize <= 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "bad block size");
        return NULL;
    }
    out = PyList_New(0);
    if (!out) {
        PyBuffer_Release(&view);
        return NULL;
    }
    d = view.buf;
    end = view.len;
    for (blk = 0; blk < end; blk += blksize) {
        Py_ssize_t pos = blk, lim = blk + blksize < end ? blk + blksize : end;
        while (pos + 8 <= lim) {
            uint32_t ino = le32(d + pos);
            unsigned reclen = (unsigned)d[pos + 4] | ((unsigned)d[pos + 5] << 8);
            unsigned dtype = d[pos + 6], namlen = d[pos + 7];
            PyObject *t;
            if (reclen == 0 || (reclen & 3) || pos + (Py_ssize_t)reclen > lim ||
                reclen < 8 + ((namlen + 1 + 3) & ~3u))
                break;
            if (ino && namlen) {
                t = Py_BuildValue("(kIy#)", (unsigned long)ino, dtype, d + pos + 8,
                                  (Py_ssize_t)namlen);
                if (!t || PyList_Append(out, t) < 0) {
                    Py_XDECREF(t);
                    Py_DECREF(out);
                    PyBuffer_Release(&view);
                    return NULL;
                }
                Py_DECREF(t);
            }
            pos += reclen;
        }
    }
    PyBuffer_Release(&view);
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* write_files                                                                                 */

#define WF_CHOWN 1
#define WF_OVERWRITE 2
#define WF_NAMED_TEMP 4 /* no O_TMPFILE on this file system: temporary name + rename */

struct wfile {
    int dirfd;
    const char *name;
    Py_ssize_t off, size;
    int mode;
    long long uid, gid, atime, mtime;
};

static unsigned long temp_seq;
static int link_by_proc; /* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc does not */

static int link_tmpfile(int fd, int dirfd, const char *name)
{
    char p[64];
    if (!link_by_proc) {
        if (linkat(fd, "", dirfd, name, AT_EMPTY_PATH) == 0)
            return 0;
        if (errno != ENOENT && errno != EPERM && errno != EINVAL)
            return -1;
        link_by_proc = 1;
    }
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    return linkat(AT_FDCWD, p, dirfd, name, AT_SYMLINK_FOLLOW);
}

struct wctx {
    int flags, named;
    mode_t umask;
    uid_t euid;
    gid_t egid;
    int dirfd, dir_sgid; /* the last directory seen, and whether it hands down its group */
};

/* One file. 0 when it is in place; otherwise -1 with errno set and nothing left behind.
 * System calls are GNU tar's or fewer: the unnamed file is created with its final mode
 * (nobody can open it before linkat), and chown/chmod are skipped when they change nothing. */
static int write_one(const struct wfile *w, const char *buf, struct wctx *c, const char *tprefix)
{
    char tmp[256];
    int fd = -1, e, flags = c->flags;
    Py_ssize_t done = 0;
    struct timespec ts[2];
    mode_t mode = (mode_t)(w->mode & 07777), created = 0600;
    int do_chown = 0;

    if (flags & WF_CHOWN) {
        if (w->dirfd != c->dirfd) {
            struct stat st;
            c->dirfd = w->dirfd;
            c->dir_sgid = fstat(w->dirfd, &st) < 0 || (st.st_mode & S_ISGID);
        }
        do_chown = (uid_t)w->uid != c->euid || (gid_t)w->gid != c->egid || c->dir_sgid;
    }
    /* a base name only: the callers split paths, and confinement relies on it */
    if (!w->name[0] || strchr(w->name, '/') || !strcmp(w->name, ".") || !strcmp(w->name, "..")) {
        errno = EINVAL;
        return -1;
    }
    tmp[0] = 0;
    if (!c->named && O_TMPFILE) {
        created = mode & 0777 & ~c->umask;
        fd = openat(w->dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, created);
        if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL))
            c->named = 1;
        else if (fd < 0)
            return -1;
    }
    if (fd < 0) {
        created = 0600;
        snprintf(tmp, sizeof tmp, "%s%lxc", tprefix, __atomic_fetch_add(&temp_seq, 1, __ATOMIC_RELAXED));
        fd = openat(w->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            return -1;
    }
    while (done < w->size) {
        ssize_t n = write(fd, buf + w->off + done, (size_t)(w->size - done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        if (n == 0) {
            errno = EIO;
            goto fail;
        }
        done += n;
    }
    if (do_chown && fchown(fd, (uid_t)w->uid, (gid_t)w->gid) < 0)
        goto fail;
    if ((mode != created || do_chown) && fchmod(fd, mode) < 0)
        goto fail;
    ts[0].tv_sec = (time_t)((w->atime >= 0 ? w->atime : w->mtime) / NS);
    ts[0].tv_nsec = (long)((w->atime >= 0 ? w->atime : w->mtime) % NS);
    ts[1].tv_sec = (time_t)(w->mtime / NS);
    ts[1].tv_nsec = (long)(w->mtime % NS);
    if (futimens(fd, ts) < 0)
        goto fail;
    if (tmp[0]) {
        if (!(flags & WF_OVERWRITE)) {
            if (renameat2(w->dirfd, tmp, w->dirfd, w->name, RENAME_NOREPLACE) < 0)
                goto fail;
        } else if (renameat(w->dirfd, tmp, w->dirfd, w->name) < 0) {
            goto fail;
        }
    } else if (link_tmpfile(fd, w->dirfd, w->name) < 0) {
        if (errno != EEXIST || !(flags & WF_OVERWRITE))
            goto fail;
        /* replace an existing entry atomically: link under a temporary name, rename over */
        snprintf(tmp, sizeof tmp, "%s%lxc", tprefix, __atomic_fetch_add(&temp_seq, 1, __ATOMIC_RELAXED));
        if (link_tmpfile(fd, w->dirfd, tmp) < 0) {
            tmp[0] = 0;
            goto fail;
        }
        if (renameat(w->dirfd, tmp, w->dirfd, w->name) < 0)
            goto fail;
    }
    close(fd);
    return 0;
fail:
    e = errno;
    close(fd);
    if (tmp[0])
        unlinkat(w->dirfd, tmp, 0);
    errno = e;
    return -1;
}

PyDoc_STRVAR(write_files_doc,
"write_files(buf, files, flags, temp_prefix, umask) -> (done, errno, named)\n\n"
"Create each file (dirfd, name, offset, size, mode, uid, gid, atime_ns or -1, mtime_ns) from\n"
"buf[offset:offset+size], invisible until complete. Stops at the first failure, leaving\n"
"nothing of that file: done is how many were created, errno why it stopped (0 = all done).\n"
"flags: 1 chown, 2 replace existing names, 4 use a named temporary file (named in the\n"
"result: O_TMPFILE is not supported here). umask: the process's, to skip needless fchmod.");

static PyObject *write_files(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *files, *seq;
    int flags, umask_bits, err = 0;
    struct wctx c;
    const char *tprefix;
    Py_ssize_t n, i, done = 0;
    struct wfile *ws;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*Oiyi", &view, &files, &flags, &tprefix, &umask_bits))
        return NULL;
    seq = PySequence_Fast(files, "files must be a sequence");
    if (!seq) {
        PyBuffer_Release(&view);
        return NULL;
    }
    n = PySequence_Fast_GET_SIZE(seq);
    ws = PyMem_Calloc(n ? (size_t)n : 1, sizeof *ws);
    if (!ws) {
        Py_DECREF(seq);
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    for (i = 0; i < n; i++) {
        struct wfile *w = &ws[i];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "iynniLLLL", &w->dirfd, &w->name,
                              &w->off, &w->size, &w->mode, &w->uid, &w->gid, &w->atime,
                              &w->mtime))
            goto fail;
        if (w->off < 0 || w->size < 0 || w->off > view.len || w->size > view.len - w->off ||
            w->mtime < 0) {
            PyErr_SetString(PyExc_ValueError, "file data outside the buffer");
            goto fail;
        }
    }
    c.flags = flags;
    c.named = (flags & WF_NAMED_TEMP) != 0;
    c.umask = (mode_t)umask_bits;
    c.euid = geteuid();
    c.egid = getegid();
    c.dirfd = -1;
    c.dir_sgid = 1;
    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < n; i++) {
        if (write_one(&ws[i], view.buf, &c, tprefix) < 0) {
            err = errno ? errno : EIO;
            break;
        }
        done++;
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(ws);
    Py_DECREF(seq);
    PyBuffer_Release(&view);
    return Py_BuildValue("(nii)", done, err, c.named);
fail:
    PyMem_Free(ws);
    Py_DECREF(seq);
    PyBuffer_Release(&view);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* backup: small files read straight into the output buffer behind their headers              */

#define PK_STOP 0  /* the file at index is not a plain small file: the Python path takes it */
#define PK_FULL 2  /* the buffer wants flushing first */
#define PK_NAME 4  /* tar: uid/gid without a name in the tables (given back in the result) */
#define FS_IOC_GETFLAGS_ 0x80086601UL

struct small {
    struct stat st;
    Py_ssize_t size;
};

/* Open, check and read one file into dst (room for max bytes). 0 ok, -1 not for the fast
 * path (nothing to undo). The stat is of the open file, so size and data agree. */
static int read_small(int dirfd, const char *name, int oflags, int single, Py_ssize_t max,
                      char *dst, Py_ssize_t room, struct small *s, int *eperm, uint32_t *flags,
                      int *noflags)
{
    int fd;
    Py_ssize_t got = 0;
    ssize_t x;
    /* no lstat first: O_NOFOLLOW refuses a symlink, O_NONBLOCK keeps a FIFO from blocking,
     * and the fstat below rejects anything but a regular file (as the dump writer's Python
     * path does); one system call less per file. */
    fd = openat(dirfd, name, oflags | O_NONBLOCK);
    if (fd < 0) {
        if (errno == EPERM)
            *eperm = 1;
        return -1;
    }
    if (fstat(fd, &s->st) < 0 || !S_ISREG(s->st.st_mode) || (single && s->st.st_nlink != 1) ||
        s->st.st_size > max || s->st.st_size > room ||
        (s->st.st_size && (long long)s->st.st_blocks * 512 < (long long)s->st.st_size))
        goto no;
    if (flags && !*noflags) {
        long fv = 0;
        if (ioctl(fd, FS_IOC_GETFLAGS_, &fv) == 0)
            *flags = (uint32_t)fv;
        else
            *noflags = 1; /* as the Python writer: any failure means "none on this device" */
    }
    x = flistxattr(fd, NULL, 0);
    if (x != 0)
        goto no; /* has xattrs, or cannot tell: the Python path decides */
    s->size = (Py_ssize_t)s->st.st_size;
    while (got < s->size) {
        x = pread(fd, dst + got, (size_t)(s->size - got), got);
        if (x < 0 && errno == EINTR)
            continue;
        if (x <= 0)
            goto no; /* shrank: the Python path pads and warns */
        got += x;
    }
    close(fd);
    return 0;
no:
    close(fd);
    return -1;
}

/* os.stat_result's ten sequence fields, then atime/mtime/ctime in ns, blocks, blksize, rdev
 * (native.stat_result builds the object) */
static PyObject *stat_tuple(const struct stat *st)
{
    return Py_BuildValue(
        "(iKKKIILlllLLLLlK)", (int)st->st_mode, (unsigned long long)st->st_ino,
        (unsigned long long)st->st_dev, (unsigned long long)st->st_nlink, (unsigned)st->st_uid,
        (unsigned)st->st_gid, (long long)st->st_size, (long)st->st_atime, (long)st->st_mtime,
        (long)st->st_ctime, (long long)st->st_atim.tv_sec * NS + st->st_atim.tv_nsec,
        (long long)st->st_mtim.tv_sec * NS + st->st_mtim.tv_nsec,
        (long long)st->st_ctim.tv_sec * NS + st->st_ctim.tv_nsec, (long long)st->st_blocks,
        (long)st->st_blksize, (unsigned long long)st->st_rdev);
}

static long long ts_ns(const struct timespec *t)
{
    return (long long)t->tv_sec * NS + t->tv_nsec;
}

/* "S" or "S.F" with trailing zeros of F dropped, as the Python writer formats pax times */
static int fmt_time(char *out, long long ns)
{
    long long s = ns / NS, f = ns % NS;
    int n = sprintf(out, "%lld", s);
    if (f) {
        n += sprintf(out + n, ".%09lld", f);
        while (out[n - 1] == '0')
            n--;
        out[n] = 0;
    }
    return n;
}

static void put_octal(char *dst, int width, unsigned long long v)
{
    /* width-1 digits and a NUL, as "%0*o\0" */
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%0*llo", width - 1, v);
    memcpy(dst, tmp, (size_t)width - 1);
    dst[width - 1] = 0;
}

static void tar_checksum(unsigned char *h)
{
    unsigned long sum = 0;
    int i;
    char tmp[16];
    memset(h + 148, ' ', 8);
    for (i = 0; i < BLOCK; i++)
        sum += h[i];
    snprintf(tmp, sizeof tmp, "%06lo", sum);
    memcpy(h + 148, tmp, 6);
    h[154] = 0;
    h[155] = ' ';
}

static int ascii_only(const char *s, Py_ssize_t n)
{
    Py_ssize_t i;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    return 1;
}

PyDoc_STRVAR(tar_pack_files_doc,
"tar_pack_files(dirfd, names, index, nprefix, xprefix, buf, pos, batch, unames, gnames,\n"
"               want_stats) -> (index, pos, status, stats, missing)\n\n"
"Append names[index:] (plain small files of one directory) to buf at pos as the Python\n"
"writer's small-file members (x header with times, ustar header, data). Stops at the first\n"
"name that is anything else (status 0), when pos reaches batch or the next member does not\n"
"fit (2), or at an owner missing from unames/gnames (4; missing = (uid, gid)). stats: for\n"
"each member written, (stat tuple, name, member offset in buf) when want_stats, else None.");

static PyObject *tar_pack_files(PyObject *self, PyObject *args)
{
    int dirfd, want_stats, status = PK_FULL, eperm = 0;
    PyObject *names, *unames, *gnames, *stats = NULL, *missing = Py_None;
    Py_ssize_t index, pos, batch, n;
    const char *npre, *xpre;
    Py_ssize_t nprelen, xprelen;
    Py_buffer view;
    (void)self;
    if (!PyArg_ParseTuple(args, "iO!ny#y#w*nnO!O!p", &dirfd, &PyList_Type, &names, &index,
                          &npre, &nprelen, &xpre, &xprelen, &view, &pos, &batch, &PyDict_Type,
                          &unames, &PyDict_Type, &gnames, &want_stats))
        return NULL;
    if (index < 0 || pos < 0 || pos > view.len) {
        PyErr_SetString(PyExc_ValueError, "bad index or position");
        goto fail;
    }
    if (want_stats && !(stats = PyList_New(0)))
        goto fail;
    n = PyList_GET_SIZE(names);
    if (index >= n)
        status = PK_STOP;
    while (index < n) {
        PyObject *nm = PyList_GET_ITEM(names, index), *un, *gn, *key;
        char *buf = view.buf, *name, recs[200], tm[40], ta[40], tc[40];
        unsigned char *xh, *uh;
        Py_ssize_t namelen, fullen, room, padded;
        struct small sm;
        int r, lr, ltm, lta, ltc;
        long long m, a, c;
        if (!PyBytes_Check(nm)) {
            PyErr_SetString(PyExc_TypeError, "names must be bytes");
            goto fail;
        }
        name = PyBytes_AS_STRING(nm);
        namelen = PyBytes_GET_SIZE(nm);
        fullen = nprelen + namelen;
        if (fullen > 100 || !ascii_only(name, namelen) || !ascii_only(npre, nprelen) ||
            (Py_ssize_t)strlen(name) != namelen) {
            status = PK_STOP;
            break;
        }
        if (pos >= batch) {
            status = PK_FULL;
            break;
        }
        room = view.len - pos - 3 * BLOCK;
        if (room < 0) {
            status = PK_FULL;
            break;
        }
        memset(&sm, 0, sizeof sm);
        Py_BEGIN_ALLOW_THREADS
        r = read_small(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 1, 1 << 20,
                       buf + pos + 3 * BLOCK, room, &sm, &eperm, NULL, NULL);
        Py_END_ALLOW_THREADS
        if (r < 0) {
            /* too big for the room left, or not a plain file: flush first, or go slow */
            status = (sm.st.st_size <= (1 << 20) && S_ISREG(sm.st.st_mode) && r < 0 && pos > 0 &&
                      sm.st.st_size > room) ? PK_FULL : PK_STOP;
            break;
        }
        m = ts_ns(&sm.st.st_mtim);
        a = ts_ns(&sm.st.st_atim);
        c = ts_ns(&sm.st.st_ctim);
        if (sm.st.st_uid > 07777777 || sm.st.st_gid > 07777777 || m < 0 || a < 0 || c < 0) {
            status = PK_STOP;
            break;
        }
        key = PyLong_FromUnsignedLong(sm.st.st_uid);
        un = key ? PyDict_GetItemWithError(unames, key) : NULL;
        Py_XDECREF(key);
        key = PyLong_FromUnsignedLong(sm.st.st_gid);
        gn = key ? PyDict_GetItemWithError(gnames, key) : NULL;
        Py_XDECREF(key);
        if (PyErr_Occurred())
            goto fail;
        if (!un || !gn || !PyBytes_Check(un) || !PyBytes_Check(gn)) {
            status = PK_NAME;
            missing = Py_BuildValue("(II)", (unsigned)sm.st.st_uid, (unsigned)sm.st.st_gid);
            if (!missing)
                goto fail;
            break;
        }
        ltm = fmt_time(tm, m);
        if (a == m) {
            strcpy(ta, tm);
            lta = ltm;
        } else {
            lta = fmt_time(ta, a);
        }
        if (c == m) {
            strcpy(tc, tm);
            ltc = ltm;
        } else {
            ltc = fmt_time(tc, c);
        }
        lr = sprintf(recs, "%d mtime=%s\n%d atime=%s\n%d ctime=%s\n", ltm + 10, tm, lta + 10, ta,
                     ltc + 10, tc);
        xh = (unsigned char *)buf + pos;
        memset(xh, 0, 2 * BLOCK);
        /* x header: DIR/PaxHeaders/NAME, cut at 100 bytes as the Python writer does */
        {
            Py_ssize_t k = xprelen < 100 ? xprelen : 100;
            memcpy(xh, xpre, (size_t)k);
            if (k < 100)
                memcpy(xh + k, name, (size_t)(namelen < 100 - k ? namelen : 100 - k));
        }
        memcpy(xh + 100, "0000644", 8);
        memcpy(xh + 108, "0000000", 8);
        memcpy(xh + 116, "0000000", 8);
        put_octal((char *)xh + 124, 12, (unsigned long long)lr);
        put_octal((char *)xh + 136, 12, (unsigned long long)(m / NS));
        xh[156] = 'x';
        memcpy(xh + 257, "ustar\0" "00", 8);
        tar_checksum(xh);
        memcpy(xh + BLOCK, recs, (size_t)lr);
        uh = xh + 2 * BLOCK;
        memset(uh, 0, BLOCK);
        memcpy(uh, npre, (size_t)nprelen);
        memcpy(uh + nprelen, name, (size_t)namelen);
        put_octal((char *)uh + 100, 8, sm.st.st_mode & 07777);
        put_octal((char *)uh + 108, 8, sm.st.st_uid);
        put_octal((char *)uh + 116, 8, sm.st.st_gid);
        put_octal((char *)uh + 124, 12, (unsigned long long)sm.size);
        put_octal((char *)uh + 136, 12, (unsigned long long)(m / NS));
        uh[156] = '0';
        memcpy(uh + 257, "ustar\0" "00", 8);
        memcpy(uh + 265, PyBytes_AS_STRING(un),
               (size_t)(PyBytes_GET_SIZE(un) < 32 ? PyBytes_GET_SIZE(un) : 32));
        memcpy(uh + 297, PyBytes_AS_STRING(gn),
               (size_t)(PyBytes_GET_SIZE(gn) < 32 ? PyBytes_GET_SIZE(gn) : 32));
        memcpy(uh + 329, "0000000", 8);
        memcpy(uh + 337, "0000000", 8);
        tar_checksum(uh);
        padded = PAD(sm.size);
        memset(buf + pos + 3 * BLOCK + sm.size, 0, (size_t)(padded - sm.size));
        if (stats) {
            PyObject *st = stat_tuple(&sm.st), *t;
            if (!st)
                goto fail;
            t = Py_BuildValue("(NOn)", st, nm, pos);
            if (!t || PyList_Append(stats, t) < 0) {
                Py_XDECREF(t);
                goto fail;
            }
            Py_DECREF(t);
        }
        pos += 3 * BLOCK + padded;
        index++;
    }
    if (index >= n && status != PK_NAME)
        status = PK_STOP;
    PyBuffer_Release(&view);
    if (missing == Py_None)
        Py_INCREF(missing);
    return Py_BuildValue("(nniNN)", index, pos, status, stats ? stats : (Py_INCREF(Py_None), Py_None),
                         missing);
fail:
    PyBuffer_Release(&view);
    Py_XDECREF(stats);
    if (missing != Py_None)
        Py_XDECREF(missing);
    return NULL;
}

static uint32_t clamp_sec(long long ns, uint32_t *usec)
{
    if (ns < 0) {
        *usec = 0;
        return 0;
    }
    if (ns / NS > 0xFFFFFFFFLL) {
        *usec = 999999;
        return 0xFFFFFFFFu;
    }
    *usec = (uint32_t)((ns % NS) / 1000);
    return (uint32_t)(ns / NS);
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

PyDoc_STRVAR(dump_pack_files_doc,
"dump_pack_files(dirfd, items, index, buf, pos, batch, flushed, template, oflags, getflags,\n"
"                want_stats) -> (index, pos, status, stats, eperm, noflags)\n\n"
"Append items[index:] ((inumber, name) of plain small files of one directory) to buf at pos\n"
"as TS_INODE headers (from the 1 KiB template: the volume's constant fields) and data\n"
"records. Stops at anything else (0) or when the buffer wants flushing (2). stats: for each\n"
"inode written, (stat tuple, inumber, stream offset) when want_stats. eperm: an open failed\n"
"with EPERM (O_NOATIME without ownership); noflags: FS_IOC_GETFLAGS is not supported.");

static PyObject *dump_pack_files(PyObject *self, PyObject *args)
{
    int dirfd, oflags, getflags, want_stats, status = PK_FULL, eperm = 0, noflags = 0;
    PyObject *items, *stats = NULL;
    Py_ssize_t index, pos, batch, n;
    unsigned long long flushed;
    Py_buffer view, tmpl;
    (void)self;
    if (!PyArg_ParseTuple(args, "iO!nw*nnKy*ipp", &dirfd, &PyList_Type, &items, &index, &view,
                          &pos, &batch, &flushed, &tmpl, &oflags, &getflags, &want_stats))
        return NULL;
    if (tmpl.len != TP_BSIZE) {
        PyErr_SetString(PyExc_ValueError, "template must be 1024 bytes");
        goto fail;
    }
    if (index < 0 || pos < 0 || pos > view.len) {
        PyErr_SetString(PyExc_ValueError, "bad index or position");
        goto fail;
    }
    if (want_stats && !(stats = PyList_New(0)))
        goto fail;
    n = PyList_GET_SIZE(items);
    while (index < n) {
        PyObject *it = PyList_GET_ITEM(items, index);
        unsigned long ino;
        const char *name;
        Py_ssize_t namelen, room, end;
        unsigned char *h;
        char *buf = view.buf;
        struct small sm;
        uint32_t cnt, sum = 0, usec, di_flags = 0;
        int r, i;
        if (!PyArg_ParseTuple(it, "ky#", &ino, &name, &namelen))
            goto fail;
        if ((Py_ssize_t)strlen(name) != namelen) {
            status = PK_STOP;
            break;
        }
        if (pos >= batch) {
            status = PK_FULL;
            break;
        }
        room = view.len - pos - TP_BSIZE;
        if (room < 0) {
            status = PK_FULL;
            break;
        }
        memset(&sm, 0, sizeof sm);
        if (!getflags)
            noflags = 1;
        Py_BEGIN_ALLOW_THREADS
        r = read_small(dirfd, name, oflags, 0, (Py_ssize_t)TP_NINDIR * TP_BSIZE,
                       buf + pos + TP_BSIZE, room, &sm, &eperm, &di_flags, &noflags);
        Py_END_ALLOW_THREADS
        if (r < 0) {
            status = (r < 0 && S_ISREG(sm.st.st_mode) && sm.st.st_size <= TP_NINDIR * TP_BSIZE &&
                      sm.st.st_size > room && pos > 0) ? PK_FULL : PK_STOP;
            break;
        }
        cnt = (uint32_t)((sm.size + TP_BSIZE - 1) / TP_BSIZE);
        end = pos + TP_BSIZE + (Py_ssize_t)cnt * TP_BSIZE;
        h = (unsigned char *)buf + pos;
        memcpy(h, tmpl.buf, TP_BSIZE);
        put32(h, TS_INODE);
        put32(h + 16, (uint32_t)((flushed + (unsigned long long)pos) >> 10));
        put32(h + 20, (uint32_t)ino);
        h[32] = (unsigned char)(sm.st.st_mode & 0xFF);
        h[33] = (unsigned char)((sm.st.st_mode >> 8) & 0xFF);
        {
            unsigned nl = sm.st.st_nlink > 0x7FFF ? 0x7FFF : (unsigned)sm.st.st_nlink;
            h[34] = (unsigned char)nl;
            h[35] = (unsigned char)(nl >> 8);
        }
        h[36] = (unsigned char)sm.st.st_uid;
        h[37] = (unsigned char)(sm.st.st_uid >> 8);
        h[38] = (unsigned char)sm.st.st_gid;
        h[39] = (unsigned char)(sm.st.st_gid >> 8);
        put32(h + 40, (uint32_t)((unsigned long long)sm.size & 0xFFFFFFFFu));
        put32(h + 44, (uint32_t)((unsigned long long)sm.size >> 32));
        put32(h + 48, clamp_sec(ts_ns(&sm.st.st_atim), &usec));
        put32(h + 52, usec);
        put32(h + 56, clamp_sec(ts_ns(&sm.st.st_mtim), &usec));
        put32(h + 60, usec);
        put32(h + 64, clamp_sec(ts_ns(&sm.st.st_ctim), &usec));
        put32(h + 68, usec);
        put32(h + 132, di_flags);
        put32(h + 136, sm.st.st_blocks > 0x7FFFFFFF ? 0x7FFFFFFFu : (uint32_t)sm.st.st_blocks);
        put32(h + 144, (uint32_t)sm.st.st_uid);
        put32(h + 148, (uint32_t)sm.st.st_gid);
        put32(h + 160, cnt);
        memset(h + 164, 0, TP_NINDIR);
        memset(h + 164, 1, cnt);
        put32(h + 28, 0);
        for (i = 0; i < TP_BSIZE; i += 4)
            sum += le32(h + i);
        put32(h + 28, (uint32_t)(DUMP_CHECKSUM - sum));
        memset(buf + pos + TP_BSIZE + sm.size, 0, (size_t)(end - pos - TP_BSIZE - sm.size));
        if (stats) {
            PyObject *st = stat_tuple(&sm.st), *t;
            if (!st)
                goto fail;
            t = Py_BuildValue("(NkK)", st, ino, flushed + (unsigned long long)pos);
            if (!t || PyList_Append(stats, t) < 0) {
                Py_XDECREF(t);
                goto fail;
            }
            Py_DECREF(t);
        }
        pos = end;
        index++;
    }
    if (index >= n)
        status = PK_STOP;
    PyBuffer_Release(&view);
    PyBuffer_Release(&tmpl);
    return Py_BuildValue("(nniNii)", index, pos, status,
                         stats ? stats : (Py_INCREF(Py_None), Py_None), eperm,
                         getflags && noflags);
fail:
    PyBuffer_Release(&view);
    PyBuffer_Release(&tmpl);
    Py_XDECREF(stats);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */

static PyMethodDef methods[] = {
    {"tar_scan", tar_scan, METH_VARARGS, tar_scan_doc},
    {"dump_scan", dump_scan, METH_VARARGS, dump_scan_doc},
    {"write_files", write_files, METH_VARARGS, write_files_doc},
    {"dir_entries", dir_entries, METH_VARARGS, dir_entries_doc},
    {"tar_pack_files", tar_pack_files, METH_VARARGS, tar_pack_files_doc},
    {"dump_pack_files", dump_pack_files, METH_VARARGS, dump_pack_files_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ndmpd._speedups",
    "C fast paths for the engines' per-file loops (optional; see native.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void)
{
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddIntConstant(m, "STOP", ST_STOP) < 0 ||
        PyModule_AddIntConstant(m, "NEED", ST_NEED) < 0 ||
        PyModule_AddIntConstant(m, "LIMIT", ST_LIMIT) < 0 ||
        PyModule_AddIntConstant(m, "END", ST_END) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
