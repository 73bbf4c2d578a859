/* loadgen: the workers bench's fake Twilio callers and fake OpenAI Realtime engine in one cheap C process.
 *
 * bench/load.py's Python fakes cost about 0.7 % of a core per call, which on a 2-core machine hides what
 * a second daemon worker gains. This is the same wire (see bench/loadgen.py, tests/fakes/openai_realtime.py
 * and bench/load.py's LeanStream/Ticker/caller) in one epoll thread with non-blocking sockets.
 *
 * Usage: loadgen API_KEY REPLY_PCM24 REPLY_PCMU REPLY_TEXT SPEECH_ULAW
 *   prints "port N" (the engine's websocket port on 127.0.0.1), then reads one line on stdin: the path of
 *   the job file (see bench/loadgen.py), runs the callers, prints one JSON object and exits.
 * Only 127.0.0.1 is ever contacted. Bounded in time: it exits at the job's `until` + STOP_GRACE.
 *
 * Turn mode (a `turn` line in the job; bench/turn_latency.py): the shape of turn_latency's Python harness
 * instead of load.py's. The engine answers in 20 ms deltas on an absolute real-time schedule (no PACE, no
 * drift); a turn's latency runs from the send of the caller frame completing the engine's end-of-turn rule
 * (the RULE_FRAMES-th quiet frame after the speech) to the first reply frame; each reply's frames give the
 * jitter (|gap - 20 ms|) and late counts (> LATE_MS after first + k x 20 ms); the loop wakes on arrivals
 * (epoll_pwait2) rather than every POLL_SECS, so arrival times are not rounded up to the poll.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME_SECS 0.02
#define TICK_GROUPS 10
#define ANSWER_TIMEOUT 10.0
#define LISTEN_SECS 2.2
#define STOP_GRACE 20.0
#define CHUNK_MS 100
#define PACE 4.0
#define VAD_RMS 300
#define MAX_LAGS 40
#define POLL_SECS 0.001 /* sockets are read at most this long after data arrives */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ------------------------------------------------------------------ small utilities */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the clock of Python's time.monotonic() and asyncio */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *msg) {
    fprintf(stderr, "loadgen: %s: %s\n", msg, strerror(errno));
    exit(2);
}

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static void buf_reserve(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) die("realloc");
    b->cap = cap;
}

static void buf_add(Buf *b, const void *data, size_t n) {
    buf_reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void buf_addf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_addf(Buf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        buf_reserve(b, (size_t)n + 1);
    }
}

static void buf_consume(Buf *b, size_t n) {
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

/* Growable arrays of doubles (latencies, lateness, engine delays). */
typedef struct {
    double *v;
    size_t n, cap;
} Vec;

static void vec_push(Vec *a, double x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 1024;
        a->v = realloc(a->v, a->cap * sizeof(double));
        if (!a->v) die("realloc");
    }
    a->v[a->n++] = x;
}

/* xorshift64*: websocket mask keys need to be unpredictable to proxies, not cryptographic here. */
static uint64_t rng_state = 88172645463325252ULL;
static uint32_t rng32(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ULL) >> 32);
}

/* ------------------------------------------------------------------ base64, SHA-1, μ-law */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static int8_t B64_INV[256];

static size_t b64_encode(const uint8_t *in, size_t n, char *out) {
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = B64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

/* Strict decode (like the fake's b64decode(validate=True)); returns bytes written or -1. */
static long b64_decode(const char *in, size_t n, uint8_t *out) {
    if (n % 4) return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int a = B64_INV[(uint8_t)in[i]], b = B64_INV[(uint8_t)in[i + 1]];
        int c = in[i + 2] == '=' ? -2 : B64_INV[(uint8_t)in[i + 2]];
        int d = in[i + 3] == '=' ? -2 : B64_INV[(uint8_t)in[i + 3]];
        if (a < 0 || b < 0 || c == -1 || d == -1 || (c == -2 && d != -2) || ((c == -2 || d == -2) && i + 4 != n))
            return -1;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)(c < 0 ? 0 : c) << 6 | (uint32_t)(d < 0 ? 0 : d);
        out[o++] = (uint8_t)(v >> 16);
        if (c >= 0) out[o++] = (uint8_t)(v >> 8);
        if (d >= 0) out[o++] = (uint8_t)v;
    }
    return (long)o;
}

static void sha1(const uint8_t *data, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    uint8_t *msg = calloc(total, 1);
    if (!msg) die("calloc");
    memcpy(msg, data, len);
    msg[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) msg[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)msg[off + 4 * i] << 24 | (uint32_t)msg[off + 4 * i + 1] << 16 |
                   (uint32_t)msg[off + 4 * i + 2] << 8 | msg[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) {
            uint32_t x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
            w[i] = x << 1 | x >> 31;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            else f = b ^ c ^ d, k = 0xCA62C1D6;
            uint32_t t = (a << 5 | a >> 27) + f + e + k + w[i];
            e = d, d = c, c = b << 30 | b >> 2, b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    free(msg);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
}

/* Sec-WebSocket-Accept for a key (29 chars incl. NUL). */
static void ws_accept(const char *key, size_t klen, char out[29]) {
    char buf[128];
    if (klen > 60) klen = 60;
    memcpy(buf, key, klen);
    memcpy(buf + klen, WS_GUID, sizeof WS_GUID - 1);
    uint8_t digest[20];
    sha1((const uint8_t *)buf, klen + sizeof WS_GUID - 1, digest);
    out[b64_encode(digest, 20, out)] = 0;
}

static int16_t ULAW[256]; /* G.711 μ-law → 16-bit linear, as audioop.ulaw2lin */

static void init_tables(void) {
    memset(B64_INV, -1, sizeof B64_INV);
    for (int i = 0; i < 64; i++) B64_INV[(uint8_t)B64[i]] = (int8_t)i;
    for (int i = 0; i < 256; i++) {
        int u = ~i & 0xff;
        int t = ((u & 0x0f) << 3) + 0x84;
        t <<= (u & 0x70) >> 4;
        ULAW[i] = (int16_t)((u & 0x80) ? (0x84 - t) : (t - 0x84));
    }
}

/* ------------------------------------------------------------------ a tiny JSON navigator (session.update etc.) */

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* The end of the JSON value starting at p (after whitespace), or NULL. */
static const char *skip_value(const char *p, const char *end) {
    p = skip_ws(p, end);
    if (p >= end) return NULL;
    if (*p == '"') {
        for (p++; p < end; p++) {
            if (*p == '\\') p++;
            else if (*p == '"') return p + 1;
        }
        return NULL;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; p < end; p++) {
            if (*p == '"') {
                p = skip_value(p, end);
                if (!p) return NULL;
                p--;
            } else if (*p == '{' || *p == '[') depth++;
            else if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n') p++;
    return p;
}

typedef struct {
    const char *p, *end; /* a JSON value's text; p == NULL: absent */
} Val;

/* The value of `key` in the object `obj` (top-level keys only). */
static Val json_get(Val obj, const char *key) {
    Val none = {NULL, NULL};
    if (!obj.p) return none;
    const char *p = skip_ws(obj.p, obj.end), *end = obj.end;
    if (p >= end || *p != '{') return none;
    size_t klen = strlen(key);
    p++;
    for (;;) {
        p = skip_ws(p, end);
        if (p >= end || *p != '"') return none;
        const char *kend = skip_value(p, end);
        if (!kend) return none;
        int match = (size_t)(kend - p - 2) == klen && memcmp(p + 1, key, klen) == 0;
        p = skip_ws(kend, end);
        if (p >= end || *p != ':') return none;
        p = skip_ws(p + 1, end);
        const char *vend = skip_value(p, end);
        if (!vend) return none;
        if (match) return (Val){p, vend};
        p = skip_ws(vend, end);
        if (p >= end || *p != ',') return none;
        p++;
    }
}

static int val_is(Val v, const char *lit) {
    size_t n = strlen(lit);
    return v.p && (size_t)(v.end - v.p) == n && memcmp(v.p, lit, n) == 0;
}

static long val_int(Val v, long dflt) {
    return v.p && (*v.p == '-' || (*v.p >= '0' && *v.p <= '9')) ? strtol(v.p, NULL, 10) : dflt;
}

/* ------------------------------------------------------------------ connections */

enum { K_LISTEN = 1, K_ENGINE, K_CALLER, K_STDIN };

typedef struct Conn {
    int kind;
    int fd;
    int client;    /* we are the websocket client: our frames are masked */
    int upgraded;  /* HTTP handshake done */
    int closing;   /* close frame sent */
    int dead;
    int want_out;  /* EPOLLOUT armed */
    Buf in, out, msg;
    int msg_op;
} Conn;

static int ep;
static double loop_now; /* when the sockets being handled were found ready */
static long wakeups, n_events, n_writes, n_reads; /* syscall counts, in the result */
static Buf sb; /* scratch for one outgoing message, with HEADROOM bytes free in front for the frame header */
#define HEADROOM 14

static void conn_arm(Conn *c, int out) {
    if (c->want_out == out || c->fd < 0) return;
    c->want_out = out;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes are corked: queued per connection and flushed once per loop turn (flush_dirty), so the events one
 * step produces (speech_stopped, committed, response.created, ...) leave in one write. */
static Conn **dirty;
static size_t n_dirty, cap_dirty;

static void conn_write(Conn *c, const char *data, size_t n) {
    if (c->dead || c->fd < 0) return;
    if (c->out.len == 0 && !c->want_out) {
        if (n_dirty == cap_dirty) {
            cap_dirty = cap_dirty ? 2 * cap_dirty : 1024;
            dirty = realloc(dirty, cap_dirty * sizeof *dirty);
            if (!dirty) die("realloc");
        }
        dirty[n_dirty++] = c;
    }
    buf_add(&c->out, data, n);
}

static void conn_flush(Conn *c) {
    while (c->out.len && c->fd >= 0) {
        ssize_t w = write(c->fd, c->out.p, c->out.len);
        n_writes++;
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                conn_arm(c, 1); /* the rest goes when the socket drains */
                return;
            }
            c->dead = 1;
            c->out.len = 0;
            return;
        }
        buf_consume(&c->out, (size_t)w);
    }
    if (c->fd >= 0) conn_arm(c, 0);
}

static void flush_dirty(void) {
    for (size_t i = 0; i < n_dirty; i++)
        if (!dirty[i]->want_out) conn_flush(dirty[i]);
    n_dirty = 0;
}

static void msg_begin(void) { sb.len = HEADROOM; }

/* Frames sb's message (opcode) and sends it; client frames are masked. */
static void msg_send(Conn *c, int opcode) {
    size_t n = sb.len - HEADROOM;
    uint8_t hdr[HEADROOM];
    size_t h = 0;
    hdr[h++] = (uint8_t)(0x80 | opcode);
    uint8_t maskbit = c->client ? 0x80 : 0;
    if (n < 126) hdr[h++] = (uint8_t)(maskbit | n);
    else if (n < 65536) {
        hdr[h++] = maskbit | 126;
        hdr[h++] = (uint8_t)(n >> 8);
        hdr[h++] = (uint8_t)n;
    } else {
        hdr[h++] = maskbit | 127;
        for (int i = 7; i >= 0; i--) hdr[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    if (c->client) {
        uint32_t key = rng32();
        uint8_t k[4];
        memcpy(k, &key, 4);
        memcpy(hdr + h, k, 4);
        h += 4;
        uint8_t *p = (uint8_t *)sb.p + HEADROOM;
        size_t i = 0;
        for (; i + 4 <= n; i += 4) {
            uint32_t v;
            memcpy(&v, p + i, 4);
            v ^= key;
            memcpy(p + i, &v, 4);
        }
        for (; i < n; i++) p[i] ^= k[i & 3];
    }
    memcpy(sb.p + HEADROOM - h, hdr, h);
    conn_write(c, sb.p + HEADROOM - h, n + h);
}

static void send_text(Conn *c, const char *text, size_t n) {
    msg_begin();
    buf_add(&sb, text, n);
    msg_send(c, 1);
}

static void conn_close_fd(Conn *c) {
    if (c->fd >= 0) {
        if (c->out.len && !c->want_out) conn_flush(c); /* a close frame or an HTTP refusal still goes out */
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->dead = 1;
}

/* Parses whole websocket frames out of c->in; calls on_msg(c, opcode, payload, len) per complete message. */
typedef void (*MsgFn)(Conn *c, int opcode, char *data, size_t n);

static void ws_parse(Conn *c, MsgFn on_msg) {
    size_t off = 0;
    while (!c->dead) {
        uint8_t *p = (uint8_t *)c->in.p + off;
        size_t avail = c->in.len - off;
        if (avail < 2) break;
        int fin = p[0] & 0x80, op = p[0] & 0x0f, masked = p[1] & 0x80;
        uint64_t n = p[1] & 0x7f;
        size_t h = 2;
        if (n == 126) {
            if (avail < 4) break;
            n = (uint64_t)p[2] << 8 | p[3];
            h = 4;
        } else if (n == 127) {
            if (avail < 10) break;
            n = 0;
            for (int i = 0; i < 8; i++) n = n << 8 | p[2 + i];
            h = 10;
        }
        if (masked) h += 4;
        if (avail < h + n) break;
        uint8_t *data = p + h;
        if (masked) {
            uint8_t *k = p + h - 4;
            for (uint64_t i = 0; i < n; i++) data[i] ^= k[i & 3];
        }
        off += h + n;
        if (op >= 8) { /* control frames may come between fragments */
            on_msg(c, op, (char *)data, n);
            continue;
        }
        if (!fin || c->msg.len) { /* a fragmented message: assemble */
            if (op) c->msg_op = op;
            buf_add(&c->msg, data, n);
            if (fin) {
                on_msg(c, c->msg_op, c->msg.p, c->msg.len);
                c->msg.len = 0;
            }
            continue;
        }
        on_msg(c, op, (char *)data, n);
    }
    if (!c->dead) buf_consume(&c->in, off);
}

/* Reads what is there; returns 0 on EOF/error (connection gone). */
static int conn_read(Conn *c) {
    for (;;) {
        buf_reserve(&c->in, 65536);
        ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
        n_reads++;
        if (r > 0) {
            c->in.len += (size_t)r;
            if ((size_t)r < c->in.cap - c->in.len + (size_t)r) return 1; /* short read: drained */
            continue;
        }
        if (r == 0) return 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
        if (errno == EINTR) continue;
        return 0;
    }
}

/* Header value (case-insensitive name) in an HTTP head; sets *len. */
static const char *http_header(const char *head, size_t hlen, const char *name, size_t *len) {
    size_t nl = strlen(name);
    const char *p = head, *end = head + hlen;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol) eol = end;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            while (v < eol && *v == ' ') v++;
            const char *ve = eol;
            while (ve > v && ve[-1] == ' ') ve--;
            *len = (size_t)(ve - v);
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

static void set_nonblock(int fd) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void conn_watch(Conn *c) {
    struct epoll_event ev = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
}

/* ------------------------------------------------------------------ shared results */

static Vec latencies, lateness, engine_delays;
static Buf errors; /* JSON array body */
static int n_errors;
static double max_lag_ms;
static double lags[MAX_LAGS][2];
static int n_lags;
static long engine_connections, engine_appends, engine_audio_bytes, engine_refused;
static double measure_from, until_t;
static double greeting_secs = 4.0; /* how long a caller lets the greeting play before it speaks */
static int turn_mode, rule_frames = 25; /* turn mode: see the header */
static double listen_secs = LISTEN_SECS, late_ms = 10.0;
static Vec jitters; /* turn mode: |gap between consecutive reply frames - 20 ms|, ms */
static long late_frames, reply_frames;

static int trace_on;
#define TRACE(...) do { if (trace_on) { fprintf(stderr, "%.3f ", now_s() - measure_from); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

static void add_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void add_error(const char *fmt, ...) {
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (n_errors++) buf_add(&errors, ",", 1);
    buf_add(&errors, "\"", 1);
    for (char *t = text; *t; t++) {
        if (*t == '"' || *t == '\\') buf_add(&errors, "\\", 1);
        if ((unsigned char)*t >= 0x20) buf_add(&errors, t, 1);
    }
    buf_add(&errors, "\"", 1);
}

/* ------------------------------------------------------------------ the fake Realtime engine (server side) */

static const char *api_key;
static char *reply_text, *caller_text;
static const char *reply_words[64];
static int n_words;
typedef struct {
    char **b64; /* per 100 ms chunk, base64 */
    size_t *b64_len;
    int *ms;    /* audio ms in each chunk */
    int n;
} Reply;
static Reply reply_pcm, reply_ulaw, reply_pcm20, reply_ulaw20; /* 100 ms chunks (load.py), 20 ms (turn mode) */
static long id_counter;

static long new_id(void) { return ++id_counter; }

typedef struct {
    long id, item;
    int k, sent_words, cancelled, phase; /* phase 0: start, 1: chunks, 2: finish */
    double next_at, t0; /* t0: when the first delta was due (turn mode's absolute schedule) */
} Response;

typedef struct {
    Conn c;
    int in_pcm, out_pcm;
    int td_on, silence_cfg, prefix_ms, create_response, interrupt_response, transcription;
    double audio_ms, silence_ms, stopped_at;
    int speech_frames, in_speech;
    long speech_item, last_item;
    uint8_t pending[960];
    size_t pending_len;
    Response *active;
    long items[8];
    double item_ms[8];
    int n_items;
    struct Engine *next_all;
} Engine;

static Engine *engines;
static uint8_t *decode_buf;

static void ev_begin(const char *type) {
    msg_begin();
    buf_addf(&sb, "{\"type\":\"%s\",\"event_id\":\"event_%04ld\"", type, new_id());
}

static void ev_end(Engine *e) {
    buf_add(&sb, "}", 1);
    msg_send(&e->c, 1);
}

static void engine_error(Engine *e, const char *code, const char *message, const char *param) {
    ev_begin("error");
    buf_addf(&sb,
             ",\"error\":{\"type\":\"invalid_request_error\",\"code\":\"%s\",\"message\":\"%s\",\"param\":%s%s%s,"
             "\"event_id\":null}",
             code, message, param ? "\"" : "", param ? param : "null", param ? "\"" : "");
    ev_end(e);
}

static void fmt_item(Buf *b, const char *key, long id) {
    if (id) buf_addf(b, ",\"%s\":\"item_%04ld\"", key, id);
    else buf_addf(b, ",\"%s\":null", key);
}

static void start_response(Engine *e) {
    Response *r = calloc(1, sizeof *r);
    if (!r) die("calloc");
    r->id = new_id();
    r->next_at = now_s();
    e->active = r;
}

static void remember_item(Engine *e, long item, double ms) {
    for (int i = 0; i < e->n_items; i++)
        if (e->items[i] == item) {
            e->item_ms[i] = ms;
            return;
        }
    int slot = e->n_items < 8 ? e->n_items++ : (int)(item % 8);
    e->items[slot] = item;
    e->item_ms[slot] = ms;
}

static void ids(long resp, long item) {
    buf_addf(&sb, ",\"response_id\":\"resp_%04ld\",\"item_id\":\"item_%04ld\",\"output_index\":0,\"content_index\":0",
             resp, item);
}

/* One step of the active response (the fake's run_response/speak, a chunk per PACE'd 100 ms). */
static void response_step(Engine *e, double now) {
    Response *r = e->active;
    Reply *rep = turn_mode ? (e->out_pcm ? &reply_pcm20 : &reply_ulaw20) : (e->out_pcm ? &reply_pcm : &reply_ulaw);
    if (r->phase == 0) {
        ev_begin("response.created");
        buf_addf(&sb, ",\"response\":{\"id\":\"resp_%04ld\",\"object\":\"realtime.response\",\"status\":\"in_progress\","
                      "\"output\":[]}", r->id);
        ev_end(e);
        r->item = new_id();
        ev_begin("response.output_item.added");
        buf_addf(&sb, ",\"response_id\":\"resp_%04ld\",\"output_index\":0,\"item\":{\"id\":\"item_%04ld\",\"object\":"
                      "\"realtime.item\",\"type\":\"message\",\"role\":\"assistant\",\"status\":\"in_progress\","
                      "\"content\":[]}", r->id, r->item);
        ev_end(e);
        ev_begin("response.content_part.added");
        ids(r->id, r->item);
        buf_addf(&sb, ",\"part\":{\"type\":\"audio\",\"transcript\":\"\"}");
        ev_end(e);
        remember_item(e, r->item, 0);
        r->phase = 1;
        r->next_at = r->t0 = now;
    }
    if (r->phase == 1) {
        if (r->cancelled || r->k >= rep->n) {
            r->phase = 2;
        } else {
            /* Turn mode sends the transcript whole before the audio, as turn_latency's PacedSession. */
            int upto = turn_mode ? n_words : n_words * (r->k + 1) / rep->n;
            if (upto > r->sent_words) {
                ev_begin("response.output_audio_transcript.delta");
                ids(r->id, r->item);
                buf_add(&sb, ",\"delta\":\"", 10);
                for (int w = r->sent_words; w < upto; w++) {
                    buf_addf(&sb, "%s%s", reply_words[w], w + 1 < upto || upto < n_words ? " " : "");
                }
                buf_add(&sb, "\"", 1);
                ev_end(e);
                r->sent_words = upto;
            }
            ev_begin("response.output_audio.delta");
            ids(r->id, r->item);
            buf_add(&sb, ",\"delta\":\"", 10);
            buf_add(&sb, rep->b64[r->k], rep->b64_len[r->k]);
            buf_add(&sb, "\"", 1);
            ev_end(e);
            if (r->k == 0) TRACE("engine %p first delta", (void *)e);
            if (e->stopped_at > 0) { /* the engine's own share of the turn: speech_stopped → first delta */
                vec_push(&engine_delays, (now_s() - e->stopped_at) * 1000);
                e->stopped_at = 0;
            }
            double ms = 0;
            for (int i = 0; i < e->n_items; i++)
                if (e->items[i] == r->item) ms = e->item_ms[i];
            remember_item(e, r->item, ms + rep->ms[r->k]);
            r->k++;
            r->next_at = turn_mode ? r->t0 + r->k * FRAME_SECS : now + CHUNK_MS / 1000.0 / PACE;
            if (r->k < rep->n) return;
            r->phase = 2; /* the end goes out with the last delta, as a real engine's does: not a delta later */
        }
    }
    /* phase 2: the response ends */
    if (!r->cancelled) {
        ev_begin("response.output_audio.done");
        ids(r->id, r->item);
        ev_end(e);
        ev_begin("response.output_audio_transcript.done");
        ids(r->id, r->item);
        buf_addf(&sb, ",\"transcript\":\"%s\"", reply_text);
        ev_end(e);
        ev_begin("response.content_part.done");
        ids(r->id, r->item);
        buf_addf(&sb, ",\"part\":{\"type\":\"audio\",\"transcript\":\"%s\"}", reply_text);
        ev_end(e);
    }
    const char *status = r->cancelled ? "incomplete" : "completed";
    Buf item = {0};
    buf_addf(&item, "{\"id\":\"item_%04ld\",\"object\":\"realtime.item\",\"type\":\"message\",\"role\":\"assistant\","
                    "\"status\":\"%s\",\"content\":[{\"type\":\"output_audio\",\"transcript\":\"%s\"}]}",
             r->item, status, reply_text);
    ev_begin("response.output_item.done");
    buf_addf(&sb, ",\"response_id\":\"resp_%04ld\",\"output_index\":0,\"item\":%.*s", r->id, (int)item.len, item.p);
    ev_end(e);
    ev_begin("response.done");
    buf_addf(&sb,
             ",\"response\":{\"id\":\"resp_%04ld\",\"object\":\"realtime.response\",\"status\":\"%s\","
             "\"status_details\":%s,\"output\":[%.*s],\"usage\":{\"total_tokens\":230,\"input_tokens\":150,"
             "\"output_tokens\":80,\"input_token_details\":{\"text_tokens\":110,\"audio_tokens\":40,"
             "\"image_tokens\":0,\"cached_tokens\":64,\"cached_tokens_details\":{\"text_tokens\":64,"
             "\"audio_tokens\":0,\"image_tokens\":0}},\"output_token_details\":{\"text_tokens\":20,"
             "\"audio_tokens\":60}}}",
             r->id, r->cancelled ? "cancelled" : "completed",
             r->cancelled ? "{\"type\":\"cancelled\",\"reason\":\"turn_detected\"}" : "null", (int)item.len, item.p);
    free(item.p);
    e->active = NULL; /* before response.done goes out, as the fake clears it */
    free(r);
    ev_end(e);
}

static void vad_frame(Engine *e, unsigned rms) {
    e->audio_ms += 20;
    if (!e->td_on) return;
    int loud = rms > VAD_RMS;
    if (!e->in_speech) {
        e->speech_frames = loud ? e->speech_frames + 1 : 0;
        if (e->speech_frames >= 3) {
            e->in_speech = 1, e->silence_ms = 0;
            e->speech_item = new_id();
            double start = e->audio_ms - 60 - e->prefix_ms;
            ev_begin("input_audio_buffer.speech_started");
            buf_addf(&sb, ",\"audio_start_ms\":%ld", (long)(start > 0 ? start : 0));
            fmt_item(&sb, "item_id", e->speech_item);
            ev_end(e);
            TRACE("engine %p speech_started active=%d", (void *)e, e->active != NULL);
            if (e->interrupt_response && e->active) e->active->cancelled = 1;
        }
        return;
    }
    e->silence_ms = loud ? 0 : e->silence_ms + 20;
    if (e->silence_ms >= e->silence_cfg) {
        e->in_speech = 0, e->speech_frames = 0;
        long item = e->speech_item ? e->speech_item : new_id();
        ev_begin("input_audio_buffer.speech_stopped");
        buf_addf(&sb, ",\"audio_end_ms\":%ld", (long)(e->audio_ms - e->silence_ms));
        fmt_item(&sb, "item_id", item);
        ev_end(e);
        e->stopped_at = now_s();
        TRACE("engine %p speech_stopped", (void *)e);
        ev_begin("input_audio_buffer.committed");
        fmt_item(&sb, "item_id", item);
        fmt_item(&sb, "previous_item_id", e->last_item);
        ev_end(e);
        e->last_item = item;
        if (e->transcription) {
            ev_begin("conversation.item.input_audio_transcription.completed");
            fmt_item(&sb, "item_id", item);
            buf_addf(&sb, ",\"content_index\":0,\"transcript\":\"%s\",\"usage\":{\"type\":\"duration\",\"seconds\":1.0}",
                     caller_text);
            ev_end(e);
        }
        if (e->create_response && !e->active) start_response(e);
    }
}

static void on_append(Engine *e, const char *b64, size_t n) {
    long got = b64_decode(b64, n, decode_buf);
    if (got < 0) {
        engine_error(e, "invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.", "audio");
        return;
    }
    engine_appends++;
    engine_audio_bytes += got;
    size_t frame = e->in_pcm ? 960 : 160;
    const uint8_t *p = decode_buf;
    size_t left = (size_t)got;
    while (left) {
        size_t take = frame - e->pending_len < left ? frame - e->pending_len : left;
        memcpy(e->pending + e->pending_len, p, take);
        e->pending_len += take, p += take, left -= take;
        if (e->pending_len < frame) break;
        double sum = 0;
        size_t samples;
        if (e->in_pcm) {
            samples = frame / 2;
            for (size_t i = 0; i < samples; i++) {
                int16_t s = (int16_t)(e->pending[2 * i] | e->pending[2 * i + 1] << 8);
                sum += (double)s * s;
            }
        } else {
            samples = frame;
            for (size_t i = 0; i < samples; i++) {
                double s = ULAW[e->pending[i]];
                sum += s * s;
            }
        }
        e->pending_len = 0;
        vad_frame(e, (unsigned)sqrt(sum / (double)samples));
    }
}

static void on_session_update(Engine *e, Val ev) {
    Val session = json_get(ev, "session");
    Val audio = json_get(session, "audio");
    Val inp = json_get(audio, "input"), out = json_get(audio, "output");
    Val fmt_in = json_get(json_get(inp, "format"), "type"), fmt_out = json_get(json_get(out, "format"), "type");
    if (fmt_in.p) e->in_pcm = val_is(fmt_in, "\"audio/pcm\"");
    if (fmt_out.p) e->out_pcm = val_is(fmt_out, "\"audio/pcm\"");
    Val td = json_get(inp, "turn_detection");
    if (td.p) {
        e->td_on = !val_is(td, "null");
        e->silence_cfg = (int)val_int(json_get(td, "silence_duration_ms"), 500);
        e->prefix_ms = (int)val_int(json_get(td, "prefix_padding_ms"), 300);
        e->create_response = !val_is(json_get(td, "create_response"), "false");
        e->interrupt_response = !val_is(json_get(td, "interrupt_response"), "false");
    }
    Val tr = json_get(inp, "transcription");
    if (tr.p) e->transcription = !val_is(tr, "null");
    if (!session.p) return;
    const char *body = skip_ws(session.p, session.end) + 1; /* after the session object's '{' */
    ev_begin("session.updated");
    buf_addf(&sb, ",\"session\":{\"object\":\"realtime.session\"%s%.*s", *skip_ws(body, session.end) == '}' ? "" : ",",
             (int)(session.end - body), body);
    ev_end(e);
}

static void on_truncate(Engine *e, Val ev) {
    Val item = json_get(ev, "item_id");
    long end = val_int(json_get(ev, "audio_end_ms"), -1);
    long id = item.p && item.end - item.p > 7 ? strtol(item.p + 6, NULL, 10) : -1;
    for (int i = 0; i < e->n_items; i++) {
        if (e->items[i] != id) continue;
        if (end > e->item_ms[i]) {
            engine_error(e, "invalid_value", "audio_end_ms exceeds the item's audio", "audio_end_ms");
            return;
        }
        ev_begin("conversation.item.truncated");
        buf_addf(&sb, ",\"item_id\":\"item_%04ld\",\"content_index\":%ld,\"audio_end_ms\":%ld", id,
                 val_int(json_get(ev, "content_index"), 0), end);
        ev_end(e);
        return;
    }
    engine_error(e, "invalid_value", "Item is not an assistant audio item.", "item_id");
}

static void on_item_create(Engine *e, Val ev) {
    Val item = json_get(ev, "item");
    if (!item.p) return;
    Val id = json_get(item, "id");
    long own = new_id();
    const char *body = skip_ws(item.p, item.end) + 1;
    ev_begin("conversation.item.added");
    fmt_item(&sb, "previous_item_id", e->last_item);
    if (id.p) buf_addf(&sb, ",\"item\":{%.*s", (int)(item.end - body), body);
    else buf_addf(&sb, ",\"item\":{\"id\":\"item_%04ld\",%.*s", own, (int)(item.end - body), body);
    ev_end(e);
    e->last_item = own; /* the fake uses the item's own id; the daemon never refers back to it */
}

#define APPEND_PREFIX "{\"type\":\"input_audio_buffer.append\",\"audio\":\""

/* Control frames, either side: ping → pong (aiohttp's heartbeat); close → echo its code (once) and drop.
   Returns 1 when `op` was a control frame; *echoed_close says the peer closed first. */
static int control_frame(Conn *c, int op, char *data, size_t n, int *echoed_close) {
    if (op == 9) {
        msg_begin();
        buf_add(&sb, data, n);
        msg_send(c, 10);
        return 1;
    }
    if (op != 8) return 0;
    if (!c->closing) {
        msg_begin();
        buf_add(&sb, data, n < 2 ? n : 2);
        msg_send(c, 8);
        if (echoed_close) *echoed_close = 1;
    }
    c->dead = 1;
    return 1;
}

static void engine_msg(Conn *c, int op, char *data, size_t n) {
    Engine *e = (Engine *)c;
    if (control_frame(c, op, data, n, NULL)) return;
    if (op != 1 && op != 2) return;
    size_t pl = sizeof APPEND_PREFIX - 1;
    if (n > pl + 2 && memcmp(data, APPEND_PREFIX, pl) == 0 && data[n - 2] == '"' && data[n - 1] == '}') {
        on_append(e, data + pl, n - pl - 2); /* the daemon builds appends by hand in exactly this shape */
        return;
    }
    Val ev = {data, data + n};
    Val type = json_get(ev, "type");
    if (val_is(type, "\"session.update\"")) on_session_update(e, ev);
    else if (val_is(type, "\"input_audio_buffer.append\"")) {
        Val audio = json_get(ev, "audio");
        if (audio.p) on_append(e, audio.p + 1, (size_t)(audio.end - audio.p - 2));
    } else if (val_is(type, "\"response.create\"")) {
        if (e->active) engine_error(e, "conversation_already_has_active_response",
                                    "Conversation already has an active response in progress.", NULL);
        else start_response(e);
    } else if (val_is(type, "\"response.cancel\"")) {
        if (!e->active) engine_error(e, "response_cancel_not_active", "Cancellation failed: no active response found", NULL);
        else e->active->cancelled = 1;
    } else if (val_is(type, "\"conversation.item.truncate\"")) on_truncate(e, ev);
    else if (val_is(type, "\"conversation.item.create\"")) on_item_create(e, ev);
    else if (val_is(type, "\"conversation.item.delete\"")) {
        ev_begin("conversation.item.deleted");
        Val id = json_get(ev, "item_id");
        buf_addf(&sb, ",\"item_id\":%.*s", id.p ? (int)(id.end - id.p) : 4, id.p ? id.p : "null");
        ev_end(e);
    } else if (val_is(type, "\"input_audio_buffer.commit\"")) e->pending_len = 0;
    else if (val_is(type, "\"input_audio_buffer.clear\"")) {
        e->pending_len = 0;
        ev_begin("input_audio_buffer.cleared");
        ev_end(e);
    } else if (val_is(type, "\"output_audio_buffer.clear\"")) {
        ev_begin("output_audio_buffer.cleared");
        ev_end(e);
    } else engine_error(e, "invalid_event_type", "Invalid value. Supported values are: ...", "type");
}

static void http_reply(Conn *c, const char *status, const char *body) {
    Buf b = {0};
    buf_addf(&b, "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
             status, strlen(body), body);
    conn_write(c, b.p, b.len);
    free(b.p);
    engine_refused++;
    c->dead = 1;
}

static void engine_handshake(Engine *e) {
    Conn *c = &e->c;
    char *end = memmem(c->in.p, c->in.len, "\r\n\r\n", 4);
    if (!end) {
        if (c->in.len > 65536) c->dead = 1;
        return;
    }
    size_t hlen = (size_t)(end - c->in.p) + 4;
    size_t klen = 0, alen = 0, blen = 0;
    const char *key = http_header(c->in.p, hlen, "Sec-WebSocket-Key", &klen);
    const char *auth = http_header(c->in.p, hlen, "Authorization", &alen);
    if (strncmp(c->in.p, "GET /v1/realtime", 16) != 0) return http_reply(c, "404 Not Found", "not found\n");
    if (http_header(c->in.p, hlen, "OpenAI-Beta", &blen))
        return http_reply(c, "400 Bad Request", "The OpenAI-Beta realtime header selects the retired beta API.\n");
    if (!auth || alen != 7 + strlen(api_key) || strncmp(auth, "Bearer ", 7) || memcmp(auth + 7, api_key, alen - 7))
        return http_reply(c, "401 Unauthorized",
                          "{\"error\": {\"type\": \"invalid_request_error\", \"code\": \"invalid_api_key\"}}\n");
    if (!key) return http_reply(c, "400 Bad Request", "no Sec-WebSocket-Key\n");
    char accept[29];
    ws_accept(key, klen, accept);
    Buf b = {0}; /* no Sec-WebSocket-Extensions: nothing negotiated */
    buf_addf(&b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
    conn_write(c, b.p, b.len);
    free(b.p);
    buf_consume(&c->in, hlen);
    c->upgraded = 1;
    engine_connections++;
    ev_begin("session.created");
    buf_addf(&sb, ",\"session\":{\"id\":\"sess_%04ld\",\"object\":\"realtime.session\",\"type\":\"realtime\","
                  "\"model\":\"gpt-realtime\",\"output_modalities\":[\"audio\"],\"instructions\":\"\",\"audio\":{"
                  "\"input\":{\"format\":{\"type\":\"audio/pcm\",\"rate\":24000},\"turn_detection\":{\"type\":"
                  "\"server_vad\",\"silence_duration_ms\":500,\"prefix_padding_ms\":300,\"create_response\":true,"
                  "\"interrupt_response\":true}},\"output\":{\"format\":{\"type\":\"audio/pcm\",\"rate\":24000},"
                  "\"voice\":\"alloy\"}}}", new_id());
    ev_end(e);
}

static void engine_accept(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) return;
        set_nonblock(fd);
        Engine *e = calloc(1, sizeof *e);
        if (!e) die("calloc");
        e->c.kind = K_ENGINE, e->c.fd = fd;
        e->in_pcm = e->out_pcm = 1;
        e->td_on = 1, e->silence_cfg = 500, e->prefix_ms = 300, e->create_response = 1, e->interrupt_response = 1;
        e->next_all = (struct Engine *)engines;
        engines = e;
        conn_watch(&e->c);
    }
}

static void engine_event(Engine *e, uint32_t events) {
    Conn *c = &e->c;
    if (events & EPOLLOUT) conn_flush(c);
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        int alive = conn_read(c);
        if (!c->upgraded && !c->dead) engine_handshake(e);
        if (c->upgraded && !c->dead) ws_parse(c, engine_msg);
        if (!alive) c->dead = 1;
    }
    if (c->dead) conn_close_fd(c);
}

/* Runs due response steps; returns the next due time (or +inf). */
static double engines_tick(double now) {
    double next = INFINITY;
    for (Engine *e = engines; e; e = (Engine *)e->next_all) {
        if (e->c.fd < 0 || !e->active) continue;
        while (e->active && e->active->next_at <= now && e->c.fd >= 0) response_step(e, now);
        if (e->c.dead) conn_close_fd(&e->c);
        else if (e->active && e->active->next_at < next) next = e->active->next_at;
    }
    return next;
}

/* ------------------------------------------------------------------ the fake Twilio callers (client side) */

static char **speech_b64; /* pre-encoded 20 ms μ-law frames of the caller's line */
static size_t speech_frames;
static char SILENCE_B64[217]; /* a 20 ms μ-law frame of silence (0xff), base64 */
static struct sockaddr_in daemon_addr;
static char daemon_hostport[64];

/* P_QUIET (turn mode): the speech is out, the quiet frames completing the engine's rule are going out. */
enum { P_CONNECTING, P_HANDSHAKE, P_GREETING, P_SAYING, P_QUIET, P_WAITING, P_LISTENING, P_CLOSING, P_DONE };

typedef struct {
    char *name; /* the mark's name as its raw JSON string, quotes included */
    double due;
} Mark;

typedef struct Caller {
    Conn c;
    int index, phase;
    double start_at, phase_due; /* when the current phase times out / moves on */
    char *path, *signature, *connected, *start, *sid;
    size_t sid_len;
    char ws_key[25];
    long chunk;
    size_t speech_left;
    double spoke_end, play_end, first_media, last_media; /* spoke_end: turn mode's rule frame */
    long frames_in_reply, media_frames;
    int quiet; /* turn mode: quiet frames sent since the speech */
    int closed;
    Mark *marks;
    int n_marks, cap_marks;
} Caller;

static Caller *callers;
static int n_callers;
static int *groups[TICK_GROUPS];
static int group_n[TICK_GROUPS];
static long tick;
static int tick_slot;
static double tick_t0;

static void caller_finish(Caller *k) {
    if (k->c.fd >= 0) conn_close_fd(&k->c);
    k->phase = P_DONE;
}

static void caller_stop(Caller *k, double now) {
    if (k->phase >= P_CLOSING) return;
    if (k->c.fd < 0 || k->closed) return caller_finish(k);
    msg_begin();
    buf_addf(&sb, "{\"event\": \"stop\", \"streamSid\": \"%s\", \"stop\": {}}", k->sid);
    msg_send(&k->c, 1);
    msg_begin();
    buf_add(&sb, "\x03\xe8", 2); /* 1000: normal closure */
    msg_send(&k->c, 8);
    k->c.closing = 1;
    k->phase = P_CLOSING;
    k->phase_due = now + 2.0;
}

static void say(Caller *k, double now) {
    if (now >= until_t || k->closed) return caller_stop(k, now);
    k->speech_left = speech_frames;
    k->phase = P_SAYING;
    k->phase_due = INFINITY;
}

static void echo_mark(Caller *k, int i) {
    msg_begin();
    buf_addf(&sb, "{\"event\": \"mark\", \"streamSid\": \"%s\", \"mark\": {\"name\": %s}}", k->sid, k->marks[i].name);
    msg_send(&k->c, 1);
    free(k->marks[i].name);
    k->marks[i] = k->marks[--k->n_marks];
}

/* The value of "event" in a Media Streams message (a JSON string), or an empty Val. */
static Val event_name(Val msg) { return json_get(msg, "event"); }

static void caller_msg(Conn *c, int op, char *data, size_t n) {
    Caller *k = (Caller *)c;
    double now = loop_now;
    if (control_frame(c, op, data, n, &k->closed)) return;
    if (op != 1) return;
    static const char media[] = "{\"event\":\"media\"";
    if (n >= sizeof media - 1 && memcmp(data, media, sizeof media - 1) == 0) {
        /* Twilio plays it out in real time: the buffer runs dry 20 ms per frame after now at the earliest. */
        k->play_end = (now > k->play_end ? now : k->play_end) + FRAME_SECS;
        k->media_frames++;
        if (k->phase == P_WAITING) {
            if (k->spoke_end >= measure_from) vec_push(&latencies, (now - k->spoke_end) * 1000);
            if (k->index == 0) TRACE("caller 0 first media after %.1f ms", (now - k->spoke_end) * 1000);
            k->phase = P_LISTENING;
            k->phase_due = now + listen_secs;
            k->first_media = now;
            k->frames_in_reply = 0;
        }
        if (k->phase == P_LISTENING && k->spoke_end >= measure_from) {
            double late = (now - (k->first_media + (double)k->frames_in_reply * FRAME_SECS)) * 1000;
            if (!turn_mode) vec_push(&lateness, late > 0 ? late : 0);
            else {
                if (k->frames_in_reply) {
                    double gap = (now - k->last_media) * 1000;
                    vec_push(&jitters, fabs(gap - FRAME_SECS * 1000));
                    if (k->index == 0 && fabs(gap - FRAME_SECS * 1000) > 5)  /* which frame of the reply */
                        TRACE("caller 0 reply frame %ld came %.1f ms after the one before", k->frames_in_reply, gap);
                }
                late_frames += late > late_ms;
                reply_frames++;
            }
        }
        k->frames_in_reply++;
        k->last_media = now;
        return;
    }
    Val msg = {data, data + n};
    Val ev = event_name(msg);
    if (val_is(ev, "\"mark\"")) {
        Val name = json_get(json_get(msg, "mark"), "name");
        if (!name.p) return;
        if (k->n_marks == k->cap_marks) {
            k->cap_marks = k->cap_marks ? 2 * k->cap_marks : 8;
            k->marks = realloc(k->marks, (size_t)k->cap_marks * sizeof(Mark));
            if (!k->marks) die("realloc");
        }
        k->marks[k->n_marks++] = (Mark){strndup(name.p, (size_t)(name.end - name.p)), k->play_end};
        if (k->play_end <= now) echo_mark(k, k->n_marks - 1);
    } else if (val_is(ev, "\"clear\"")) {
        k->play_end = now;
        while (k->n_marks) echo_mark(k, k->n_marks - 1); /* pending marks come back at once on clear */
    }
}

static void caller_connect(Caller *k) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    set_nonblock(fd);
    k->c.fd = fd;
    k->c.kind = K_CALLER;
    k->c.client = 1;
    k->c.want_out = 1;
    k->phase = P_CONNECTING;
    k->phase_due = now_s() + 10.0;
    if (connect(fd, (struct sockaddr *)&daemon_addr, sizeof daemon_addr) < 0 && errno != EINPROGRESS) {
        add_error("caller %d: connect: %s", k->index, strerror(errno));
        close(fd);
        k->c.fd = -1;
        k->phase = P_DONE;
        return;
    }
    conn_watch(&k->c);
}

static void caller_send_upgrade(Caller *k) {
    uint8_t raw[16];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = rng32();
        memcpy(raw + i, &r, 4);
    }
    k->ws_key[b64_encode(raw, 16, k->ws_key)] = 0;
    Buf b = {0};
    buf_addf(&b,
             "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
             "Sec-WebSocket-Version: 13\r\nX-Twilio-Signature: %s\r\nUser-Agent: loadgen\r\n\r\n",
             k->path, daemon_hostport, k->ws_key, k->signature);
    conn_write(&k->c, b.p, b.len);
    free(b.p);
    k->phase = P_HANDSHAKE;
}

static void caller_handshake(Caller *k, double now) {
    Conn *c = &k->c;
    char *end = memmem(c->in.p, c->in.len, "\r\n\r\n", 4);
    if (!end) return;
    size_t hlen = (size_t)(end - c->in.p) + 4, alen = 0;
    const char *acc = http_header(c->in.p, hlen, "Sec-WebSocket-Accept", &alen);
    char want[29];
    ws_accept(k->ws_key, strlen(k->ws_key), want);
    if (strncmp(c->in.p, "HTTP/1.1 101", 12) != 0 || !acc || alen != 28 || memcmp(acc, want, 28) != 0) {
        add_error("caller %d: WSServerHandshakeError: %.12s", k->index, c->in.p);
        return caller_finish(k);
    }
    buf_consume(&c->in, hlen);
    c->upgraded = 1;
    send_text(c, k->connected, strlen(k->connected));
    send_text(c, k->start, strlen(k->start));
    groups[k->index % TICK_GROUPS][group_n[k->index % TICK_GROUPS]++] = (int)(k - callers);
    k->phase = P_GREETING;
    k->phase_due = now + greeting_secs;
}

static void caller_event(Caller *k, uint32_t events) {
    Conn *c = &k->c;
    double now = loop_now;
    if (k->phase == P_CONNECTING && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            add_error("caller %d: ClientConnectorError: %s", k->index, strerror(err));
            return caller_finish(k);
        }
        conn_arm(c, 0);
        caller_send_upgrade(k);
        return;
    }
    if (events & EPOLLOUT) conn_flush(c);
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        int alive = conn_read(c);
        if (!c->upgraded && !c->dead && c->in.len) caller_handshake(k, now);
        if (c->upgraded && !c->dead) ws_parse(c, caller_msg);
        if (!alive && !c->closing) k->closed = 1;
        if (!alive) c->dead = 1;
    }
    if (k->phase == P_DONE) return;
    if (c->dead) {
        if (k->phase == P_HANDSHAKE) add_error("caller %d: the handshake failed (connection closed)", k->index);
        else if (!c->closing) add_error("caller %d: the daemon closed the stream", k->index);
        caller_finish(k);
    }
}

/* Moves callers whose phase timed out; returns the next due time. */
static double callers_tick(double now) {
    double next = INFINITY;
    for (int i = 0; i < n_callers; i++) {
        Caller *k = &callers[i];
        if (k->phase == P_DONE) continue;
        if (k->phase == P_CONNECTING && k->c.fd < 0 && k->start_at <= now) caller_connect(k);
        for (int m = 0; m < k->n_marks; m++) /* marks echoed when real-time playback passes them */
            if (k->marks[m].due <= now) echo_mark(k, m--);
            else if (k->marks[m].due < next) next = k->marks[m].due;
        if (k->phase_due <= now) {
            switch (k->phase) {
            case P_CONNECTING:
            case P_HANDSHAKE:
                add_error("caller %d: no websocket within 10 s", k->index);
                caller_finish(k);
                break;
            case P_GREETING:
                if (!k->media_frames) add_error("caller %d: no greeting", k->index);
                say(k, now);
                break;
            case P_QUIET:
                add_error("caller %d: could not finish its turn", k->index);
                say(k, now);
                break;
            case P_WAITING:
                add_error("caller %d: no answer to a turn", k->index);
                say(k, now);
                break;
            case P_LISTENING:
                say(k, now); /* the answer played (about 2 s): speak again */
                break;
            case P_CLOSING:
                caller_finish(k);
                break;
            }
        }
        if (k->c.dead && k->phase != P_DONE) {
            if (!k->c.closing) add_error("caller %d: the daemon closed the stream", k->index);
            caller_finish(k);
        }
        if (k->phase == P_DONE) continue;
        double due = k->phase == P_CONNECTING && k->c.fd < 0 ? k->start_at : k->phase_due;
        if (due < next) next = due;
    }
    return next;
}

static char *put(char *p, const char *s, size_t n) {
    memcpy(p, s, n);
    return p + n;
}

static char *put_long(char *p, long v) {
    char tmp[24];
    int i = 0;
    do tmp[i++] = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    while (i) *p++ = tmp[--i];
    return p;
}

/* One send slot of the 20 ms tick: every caller of the group sends its next frame. */
static void send_group(int g, double now) {
    for (int j = 0; j < group_n[g]; j++) {
        Caller *k = &callers[groups[g][j]];
        if (k->phase < P_GREETING || k->phase >= P_CLOSING || k->c.dead) continue;
        k->chunk++;
        const char *payload = SILENCE_B64;
        if (k->speech_left) {
            payload = speech_b64[speech_frames - k->speech_left];
            if (--k->speech_left == 0 && k->phase == P_SAYING && turn_mode) { /* said: the rule's frames next */
                k->quiet = 0;
                k->phase = P_QUIET;
                k->phase_due = now + 15.0;
            } else if (k->speech_left == 0 && k->phase == P_SAYING) { /* said: wait for the answer */
                k->spoke_end = now;
                if (k->index == 0) TRACE("caller 0 said");
                k->phase = P_WAITING;
                k->phase_due = now + ANSWER_TIMEOUT;
            }
        } else if (k->phase == P_QUIET && ++k->quiet >= rule_frames) {
            /* This frame completes the engine's end-of-turn rule: the engine can answer only after it. */
            k->spoke_end = now;
            if (k->index == 0) TRACE("caller 0 completed the rule");
            k->phase = P_WAITING;
            k->phase_due = now + ANSWER_TIMEOUT;
        }
        long n = k->chunk;
        /* The hot path: built by hand, the same text as load.py's LeanStream.frame. */
        msg_begin();
        buf_reserve(&sb, 512);
        char *p = sb.p + sb.len;
        p = put(p, "{\"event\":\"media\",\"streamSid\":\"", 30);
        p = put(p, k->sid, k->sid_len);
        p = put(p, "\",\"sequenceNumber\":\"", 20);
        p = put_long(p, n + 1);
        p = put(p, "\",\"media\":{\"track\":\"inbound\",\"chunk\":\"", 38);
        p = put_long(p, n);
        p = put(p, "\",\"timestamp\":\"", 15);
        p = put_long(p, (n - 1) * 20);
        p = put(p, "\",\"payload\":\"", 13);
        p = put(p, payload, 216);
        p = put(p, "\"}}", 3);
        sb.len = (size_t)(p - sb.p);
        msg_send(&k->c, 1);
    }
}

/* Runs every send slot that is due; returns when the next one is. */
static double ticker_run(double now) {
    for (;;) {
        double due = tick_t0 + ((double)tick + (double)tick_slot / TICK_GROUPS) * FRAME_SECS;
        if (due > now) return due;
        double lag = (now - due) * 1000;
        if (tick > 50) {
            if (lag > max_lag_ms) max_lag_ms = lag;
            if (lag > 20 && n_lags < MAX_LAGS) {
                lags[n_lags][0] = now - measure_from;
                lags[n_lags][1] = lag;
                n_lags++;
            }
        }
        send_group(tick_slot, now);
        if (++tick_slot == TICK_GROUPS) tick_slot = 0, tick++;
        now = now_s();
    }
}

/* ------------------------------------------------------------------ setup, the loop, the result */

static uint8_t *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    Buf b = {0};
    for (;;) {
        buf_reserve(&b, 65536);
        size_t r = fread(b.p + b.len, 1, b.cap - b.len, f);
        if (r == 0) break;
        b.len += r;
    }
    fclose(f);
    *n = b.len;
    buf_add(&b, "", 1); /* NUL-terminated for text files */
    return (uint8_t *)b.p;
}

static void load_reply(Reply *r, const char *path, int bytes_per_ms, int chunk_ms) {
    size_t n;
    uint8_t *audio = read_file(path, &n);
    size_t chunk = (size_t)(chunk_ms * bytes_per_ms);
    r->n = (int)((n + chunk - 1) / chunk);
    if (r->n == 0) r->n = 1;
    r->b64 = calloc((size_t)r->n, sizeof(char *));
    r->b64_len = calloc((size_t)r->n, sizeof(size_t));
    r->ms = calloc((size_t)r->n, sizeof(int));
    if (!r->b64 || !r->b64_len || !r->ms) die("calloc");
    for (int k = 0; k < r->n; k++) {
        size_t off = (size_t)k * chunk, len = off + chunk <= n ? chunk : n - off;
        r->b64[k] = malloc(len / 3 * 4 + 8);
        if (!r->b64[k]) die("malloc");
        r->b64_len[k] = b64_encode(audio + off, len, r->b64[k]);
        r->ms[k] = (int)(len / (size_t)bytes_per_ms);
    }
    free(audio);
}

static char *next_field(char **p) {
    char *f = *p;
    if (!f) return NULL;
    char *t = strchr(f, '\t');
    if (t) *t = 0, *p = t + 1;
    else *p = NULL;
    return f;
}

static void load_job(const char *path) {
    size_t n;
    char *text = (char *)read_file(path, &n);
    int cap = 0;
    for (size_t i = 0; i < n; i++) cap += text[i] == '\n';
    callers = calloc((size_t)cap + 1, sizeof(Caller));
    for (int g = 0; g < TICK_GROUPS; g++) groups[g] = calloc((size_t)cap / TICK_GROUPS + 2, sizeof(int));
    if (!callers) die("calloc");
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *rest = line, *kind = next_field(&rest);
        if (strcmp(kind, "daemon") == 0) {
            char *host = next_field(&rest), *port = next_field(&rest);
            if (strcmp(host, "127.0.0.1") != 0) {
                fprintf(stderr, "loadgen: only 127.0.0.1 is allowed, not %s\n", host);
                exit(2);
            }
            daemon_addr.sin_family = AF_INET;
            daemon_addr.sin_port = htons((uint16_t)atoi(port));
            inet_pton(AF_INET, host, &daemon_addr.sin_addr);
            snprintf(daemon_hostport, sizeof daemon_hostport, "%s:%s", host, port);
        } else if (strcmp(kind, "window") == 0) {
            measure_from = atof(next_field(&rest));
            until_t = atof(next_field(&rest));
            char *greeting = next_field(&rest);
            if (greeting) greeting_secs = atof(greeting);
        } else if (strcmp(kind, "turn") == 0) { /* turn RULE_FRAMES LISTEN_SECS LATE_MS */
            char *rule = next_field(&rest), *listen = next_field(&rest), *late = next_field(&rest);
            if (!rule || !listen || !late) {
                fprintf(stderr, "loadgen: bad turn line\n");
                exit(2);
            }
            turn_mode = 1;
            rule_frames = atoi(rule);
            listen_secs = atof(listen);
            late_ms = atof(late);
        } else if (strcmp(kind, "call") == 0) {
            Caller *k = &callers[n_callers++];
            k->index = atoi(next_field(&rest));
            k->start_at = atof(next_field(&rest));
            k->sid = next_field(&rest);
            k->sid_len = strlen(k->sid);
            k->path = next_field(&rest);
            k->signature = next_field(&rest);
            k->connected = next_field(&rest);
            k->start = next_field(&rest);
            if (!k->start) {
                fprintf(stderr, "loadgen: bad call line\n");
                exit(2);
            }
            k->c.fd = -1;
            k->phase = P_CONNECTING;
            k->phase_due = INFINITY;
        }
    }
    /* text is kept: the callers point into it */
}

static void print_vec(const char *name, Vec *v) {
    printf("\"%s\":[", name);
    for (size_t i = 0; i < v->n; i++) printf("%s%.3f", i ? "," : "", v->v[i]);
    printf("]");
}

static void print_result(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{");
    print_vec("latencies_ms", &latencies);
    printf(",");
    print_vec("lateness_ms", &lateness);
    printf(",");
    print_vec("engine_delays_ms", &engine_delays);
    printf(",");
    print_vec("jitter_ms", &jitters);
    printf(",\"turn_mode\":%d,\"late\":%ld,\"frames\":%ld", turn_mode, late_frames, reply_frames);
    printf(",\"errors\":[%.*s],\"tick_lag_ms\":%.3f,\"lags\":[", (int)errors.len, errors.p ? errors.p : "", max_lag_ms);
    for (int i = 0; i < n_lags; i++) printf("%s[%.2f,%.0f]", i ? "," : "", lags[i][0], lags[i][1]);
    printf("],\"engine\":{\"connections\":%ld,\"refused\":%ld,\"appends\":%ld,\"audio_bytes_in\":%ld},",
           engine_connections, engine_refused, engine_appends, engine_audio_bytes);
    printf("\"syscalls\":{\"wakeups\":%ld,\"events\":%ld,\"writes\":%ld,\"reads\":%ld},", wakeups, n_events, n_writes, n_reads);
    printf("\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f}\n", (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: loadgen API_KEY REPLY_PCM24 REPLY_PCMU REPLY_TEXT CALLER_TEXT SPEECH_ULAW\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    init_tables();
    trace_on = getenv("LOADGEN_TRACE") != NULL;
    rng_state ^= (uint64_t)getpid() << 32 ^ (uint64_t)(now_s() * 1e9);
    api_key = argv[1];
    load_reply(&reply_pcm, argv[2], 48, CHUNK_MS);
    load_reply(&reply_ulaw, argv[3], 8, CHUNK_MS);
    load_reply(&reply_pcm20, argv[2], 48, 20);
    load_reply(&reply_ulaw20, argv[3], 8, 20);
    reply_text = argv[4];
    caller_text = argv[5];
    char *words = strdup(reply_text);
    for (char *w = strtok(words, " "); w && n_words < 64; w = strtok(NULL, " ")) reply_words[n_words++] = w;
    size_t sn;
    uint8_t *speech = read_file(argv[6], &sn);
    speech_frames = sn / 160;
    uint8_t quiet[160];
    memset(quiet, 0xff, sizeof quiet);
    SILENCE_B64[b64_encode(quiet, 160, SILENCE_B64)] = 0;
    speech_b64 = calloc(speech_frames + 1, sizeof(char *));
    for (size_t i = 0; i < speech_frames; i++) {
        speech_b64[i] = malloc(220);
        speech_b64[i][b64_encode(speech + 160 * i, 160, speech_b64[i])] = 0;
    }
    decode_buf = malloc(1 << 20);
    buf_reserve(&sb, 1 << 16);

    ep = epoll_create1(0);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1024) < 0) die("listen");
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    static int listen_kind = K_LISTEN, stdin_kind = K_STDIN;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listen_kind};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    ev.data.ptr = &stdin_kind;
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    printf("port %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    Buf line = {0};
    int have_job = 0;
    double job_deadline = now_s() + 600, hard_end = INFINITY;
    static struct epoll_event events[1024];
    int nev = 0;
    for (;;) {
        double now = now_s();
        double next = now + 1.0;
        if (have_job) {
            double t = ticker_run(now);
            if (t < next) next = t;
            t = callers_tick(now);
            if (t < next) next = t;
            int running = 0;
            for (int i = 0; i < n_callers; i++) running += callers[i].phase != P_DONE;
            if (!running || now > hard_end) break;
        } else if (now > job_deadline) {
            fprintf(stderr, "loadgen: no job\n");
            return 2;
        }
        double t = engines_tick(now);
        if (t < next) next = t;
        flush_dirty();
        if (have_job && turn_mode) {
            /* Woken by the next timer or the first arrival, whichever comes first (ns timeout): the
             * arrival times are the figures, so they are not rounded up to a poll period. */
            double wait = next - now_s();
            if (wait < 0) wait = 0;
            struct timespec ts = {(time_t)wait, (long)((wait - floor(wait)) * 1e9)};
            nev = epoll_pwait2(ep, events, 1024, &ts, NULL);
        } else if (have_job && nev < 1024) {
            /* Wake on timers only, at most POLL_SECS apart, and then take every socket that is ready:
             * a wake-up per arriving message would cost more than the message (on a VM especially). */
            double target = now + POLL_SECS < next ? now + POLL_SECS : next;
            if (target > now_s()) {
                struct timespec ts = {(time_t)target, (long)((target - floor(target)) * 1e9)};
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            }
            nev = epoll_wait(ep, events, 1024, 0);
        } else if (have_job) {
            nev = epoll_wait(ep, events, 1024, 0); /* more were ready than fit: the rest at once */
        } else {
            double wait = next - now_s();
            nev = epoll_wait(ep, events, 1024, wait <= 0 ? 0 : (int)ceil(wait * 1000));
        }
        wakeups++;
        loop_now = now_s();
        n_events += nev > 0 ? nev : 0;
        for (int i = 0; i < nev; i++) {
            int kind = *(int *)events[i].data.ptr;
            if (kind == K_LISTEN) engine_accept(lfd);
            else if (kind == K_ENGINE) engine_event((Engine *)events[i].data.ptr, events[i].events);
            else if (kind == K_CALLER) caller_event((Caller *)events[i].data.ptr, events[i].events);
            else if (kind == K_STDIN) {
                char chunk[4096];
                ssize_t r = read(0, chunk, sizeof chunk);
                if (r <= 0) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
                    if (!have_job) return 2; /* the driver went away */
                    continue;
                }
                buf_add(&line, chunk, (size_t)r);
                char *nl = memchr(line.p, '\n', line.len);
                if (nl && !have_job) {
                    *nl = 0;
                    load_job(line.p);
                    have_job = 1;
                    tick_t0 = now_s();
                    hard_end = until_t + STOP_GRACE;
                }
            }
        }
    }
    print_result();
    return 0;
}
