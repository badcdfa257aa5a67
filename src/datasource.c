/* datasource.c -- the .datasource datafile parser: Tinybird's instruction syntax, the
 * SCHEMA block's columns, JSONPaths compiled into steps, DEFAULT literals checked. */
#include "datasource.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* MARK: - The arena */

/* Strings and steps live in blocks that never move, so pointers handed out while parsing
 * stay valid; the whole definition is freed at once. */
struct block {
    struct block *next;
    size_t used, cap;
    _Alignas(8) char data[];
};

/* A definition's strings are mostly a few hundred bytes, and every process holds every
 * definition: the first block is small, each next one twice the last, up to BLOCK_MAX. */
#define BLOCK_FIRST 1024
#define BLOCK_MAX (16 * 1024)

static void *arena_alloc(void **arena, size_t n)
{
    struct block *b = *arena;
    n = (n + 7) & ~(size_t)7;
    if (!b || b->cap - b->used < n) {
        size_t next = !b ? BLOCK_FIRST : b->cap < BLOCK_MAX ? 2 * b->cap : BLOCK_MAX;
        size_t cap = n > next ? n : next;
        struct block *nb = malloc(sizeof *nb + cap);
        if (!nb)
            return NULL;
        nb->next = b;
        nb->used = 0;
        nb->cap = cap;
        *arena = b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

static void arena_free(void *arena)
{
    for (struct block *b = arena; b;) {
        struct block *next = b->next;
        free(b);
        b = next;
    }
}

static char *arena_str(void **arena, const char *p, size_t n)
{
    char *s = arena_alloc(arena, n + 1);
    if (s) {
        if (n)
            memcpy(s, p, n);
        s[n] = 0;
    }
    return s;
}

/* MARK: - Parser state and errors */

struct parser {
    const char *file, *text;
    size_t len;
    struct datasource *ds;
    char *err;
    size_t errlen;
    int failed;
    size_t lpos; /* line_at's cache: lline is the line of offset lpos */
    int lline;
};

/* The 1-based line of offset pos; positions asked for mostly grow, so it counts on from
 * the last answer. */
static int line_at(struct parser *s, size_t pos)
{
    if (pos < s->lpos) {
        s->lpos = 0;
        s->lline = 1;
    }
    for (; s->lpos < pos && s->lpos < s->len; s->lpos++)
        s->lline += s->text[s->lpos] == '\n';
    return s->lline;
}

/* Records "FILE:LINE: message" for the error at offset pos (the first error only). */
static int fail(struct parser *s, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct parser *s, size_t pos, const char *fmt, ...)
{
    if (s->failed)
        return -1;
    s->failed = 1;
    if (!s->errlen)
        return -1;
    int n = snprintf(s->err, s->errlen, "%s:%d: ", s->file, line_at(s, pos));
    if (n >= 0 && (size_t)n < s->errlen) {
        va_list ap;
        va_start(ap, fmt);
        /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start just above */
        vsnprintf(s->err + n, s->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int nomem(struct parser *s, size_t pos) { return fail(s, pos, "out of memory"); }

static int hblank(char c) { return c == ' ' || c == '\t' || c == '\r'; }
static int anyblank(char c) { return hblank(c) || c == '\n'; }
static int upper_word(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
static int ident_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int ident_char(char c) { return ident_start(c) || (c >= '0' && c <= '9'); }

/* MARK: - Paths */

/* Compiles the path p[0..n) (at offset pos) into steps for column c. */
static int compile_path(struct parser *s, size_t pos, struct ds_column *c, const char *p, size_t n)
{
    struct json_step steps[DS_MAX_DEPTH];
    char key[DS_MAX_NAME + 1];
    uint32_t nsteps = 0, every = 0;
    if (n > DS_MAX_PATH)
        return fail(s, pos, "column `%s`: path longer than %d bytes", c->name, DS_MAX_PATH);
    if (n == 0 || p[0] != '$')
        return fail(s, pos, "column `%s`: a path starts with $: `json:$.key`", c->name);
    if (n == 1)
        return fail(s, pos, "column `%s`: the path must name a key: `json:$.key`", c->name);
    size_t i = 1;
    while (i < n) {
        struct json_step st = {0};
        size_t kl = 0;
        if (nsteps == DS_MAX_DEPTH)
            return fail(s, pos, "column `%s`: path deeper than %d steps", c->name, DS_MAX_DEPTH);
        if (p[i] == '.') {
            size_t k = ++i;
            while (i < n && p[i] != '.' && p[i] != '[') {
                if (anyblank(p[i]) || p[i] == ']' || p[i] == '\'' || p[i] == '"')
                    return fail(s, pos, "column `%s`: '%c' in a key: write $['...'] for such keys",
                                c->name, anyblank(p[i]) ? ' ' : p[i]);
                i++;
            }
            kl = i - k;
            if (kl > DS_MAX_NAME)
                return fail(s, pos, "column `%s`: a path key longer than %d bytes", c->name,
                            DS_MAX_NAME);
            if (kl)
                memcpy(key, p + k, kl);
            st.kind = JSON_STEP_KEY;
        } else if (p[i] == '[' && i + 1 < n && (p[i + 1] == '\'' || p[i + 1] == '"')) {
            char q = p[i + 1];
            for (i += 2; i < n && p[i] != q; i++) {
                if (p[i] == '\\' && i + 1 < n)
                    i++; /* \' \" \\: the next byte as it is */
                if (kl == DS_MAX_NAME)
                    return fail(s, pos, "column `%s`: a path key longer than %d bytes", c->name,
                                DS_MAX_NAME);
                key[kl++] = p[i];
            }
            if (i + 1 >= n || p[i + 1] != ']')
                return fail(s, pos, "column `%s`: unterminated ['key'] in path", c->name);
            i += 2;
            st.kind = JSON_STEP_KEY;
        } else if (p[i] == '[' && i + 2 < n && p[i + 1] == ':' && p[i + 2] == ']') {
            i += 3;
            st.kind = JSON_STEP_EVERY;
            every++;
        } else if (p[i] == '[' && i + 1 < n && p[i + 1] >= '0' && p[i + 1] <= '9') {
            uint64_t x = 0;
            for (i++; i < n && p[i] >= '0' && p[i] <= '9'; i++)
                if ((x = x * 10 + (uint64_t)(p[i] - '0')) > UINT32_MAX)
                    return fail(s, pos, "column `%s`: array index too large", c->name);
            if (i >= n || p[i] != ']')
                return fail(s, pos, "column `%s`: expected ']' after the index", c->name);
            i++;
            st.kind = JSON_STEP_INDEX;
            st.index = (uint32_t)x;
        } else if (p[i] == '[') {
            return fail(s, pos, "column `%s`: expected ['key'], [N] or [:] in path", c->name);
        } else {
            return fail(s, pos, "column `%s`: expected '.' or '[' in path at '%c'", c->name, p[i]);
        }
        if (st.kind == JSON_STEP_KEY) {
            if (!kl)
                return fail(s, pos, "column `%s`: empty key in path", c->name);
            if (!(st.key = arena_str(&s->ds->arena, key, kl)))
                return nomem(s, pos);
            st.len = (uint32_t)kl;
        }
        steps[nsteps++] = st;
    }
    if (every > c->type.array_depth)
        return fail(s, pos, "column `%s`: [:] needs an Array column, one Array per [:]", c->name);
    struct json_step *kept = arena_alloc(&s->ds->arena, nsteps * sizeof *kept);
    if (!kept)
        return nomem(s, pos);
    memcpy(kept, steps, nsteps * sizeof *kept);
    c->steps = kept;
    c->nsteps = nsteps;
    for (uint32_t k = 0; k < nsteps; k++) {
        if (kept[k].kind == JSON_STEP_EVERY) {
            c->each = kept + k + 1;
            c->neach = nsteps - k - 1;
            break;
        }
    }
    return 0;
}

/* MARK: - DEFAULT */

static int is_number_literal(const char *p, size_t n)
{
    size_t i = p[0] == '-';
    size_t d = i;
    while (i < n && p[i] >= '0' && p[i] <= '9')
        i++;
    if (i == d)
        return 0;
    if (i < n && p[i] == '.') {
        size_t f = ++i;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
        if (i == f)
            return 0;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        size_t e = i;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
        if (i == e)
            return 0;
    }
    return i == n;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Decodes the body p[0..n) of a 'string' DEFAULT into out (room for n bytes), *len its
 * length, as ClickHouse decodes an SQL string literal: '' and the escapes of escapes[]
 * below. Any other escape is refused rather than guessed: 18.16 drops the backslash of \z
 * (and reads \N as nothing) where current releases keep it, so the cell would differ from
 * the table's DEFAULT on one of them; 18.16 also reads \x with one hex digit as a syntax
 * error or a garbage byte. */
static int sql_string(struct parser *s, size_t pos, const struct ds_column *c, const char *p,
                      size_t n, char *out, size_t *len)
{
    static const char escapes[][2] = {{'0', '\0'}, {'a', '\a'}, {'b', '\b'}, {'e', 0x1b},
                                      {'f', '\f'}, {'n', '\n'}, {'r', '\r'}, {'t', '\t'},
                                      {'v', '\v'}, {'\\', '\\'}, {'\'', '\''}};
    static const char decoded[] = "(ndingest reads \\xHH \\0 \\a \\b \\e \\f \\n \\r \\t "
                                "\\v \\\\ \\' and '')";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\'') {
            if (i + 1 == n || p[i + 1] != '\'')
                return fail(s, pos, "column `%s`: unescaped ' in the DEFAULT string", c->name);
            out[o++] = p[i++];
            continue;
        }
        if (p[i] != '\\') {
            out[o++] = p[i];
            continue;
        }
        char e = ++i < n ? p[i] : 0;
        if (e == 'x') {
            int hi = i + 2 < n ? hex_digit(p[i + 1]) : -1;
            int lo = hi >= 0 ? hex_digit(p[i + 2]) : -1;
            if (lo < 0)
                return fail(s, pos, "column `%s`: \\x needs two hex digits in the DEFAULT string %s",
                            c->name, decoded);
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
            continue;
        }
        size_t k = 0;
        while (k < sizeof escapes / sizeof *escapes && escapes[k][0] != e)
            k++;
        if (k == sizeof escapes / sizeof *escapes) {
            if (e > ' ' && e < 0x7f)
                return fail(s, pos, "column `%s`: unknown escape \\%c in the DEFAULT string %s",
                            c->name, e, decoded);
            return fail(s, pos, "column `%s`: a backslash before byte 0x%02x in the DEFAULT "
                        "string %s", c->name, (unsigned char)e, decoded);
        }
        out[o++] = escapes[k][1];
    }
    *len = o;
    return 0;
}

/* Checks the DEFAULT p[0..n) of column c and renders its cell: a literal (a number, a
 * 'string', true, false, NULL, []) must be a valid value of the type; anything else is an
 * expression for ClickHouse to evaluate. */
static int compile_default(struct parser *s, size_t pos, struct ds_column *c, const char *p,
                           size_t n)
{
    struct cell v = {p, (uint32_t)n, CELL_RAW};
    char *unq = NULL;
    c->has_default = 1;
    if (!(c->default_text = arena_str(&s->ds->arena, p, n)))
        return nomem(s, pos);
    if (n == 4 && strncasecmp(p, "NULL", 4) == 0) {
        if (!c->type.nullable || c->type.array_depth)
            return fail(s, pos, "column `%s`: DEFAULT NULL needs a Nullable column", c->name);
        v = (struct cell){NULL, 0, CELL_EMPTY};
    } else if (n >= 2 && p[0] == '\'' && p[n - 1] == '\'') {
        if (!(unq = malloc(n)))
            return nomem(s, pos);
        size_t o = 0;
        if (sql_string(s, pos, c, p + 1, n - 2, unq, &o)) {
            free(unq);
            return -1;
        }
        v = (struct cell){unq, (uint32_t)o, CELL_STRING};
    } else if (!(is_number_literal(p, n) || (n == 4 && memcmp(p, "true", 4) == 0) ||
                 (n == 5 && memcmp(p, "false", 5) == 0) || (n == 2 && memcmp(p, "[]", 2) == 0))) {
        c->default_is_expr = 1;
        c->default_cell = "";
        return 0;
    }
    struct buf b = {0};
    const char *why = NULL;
    enum type_result r = type_cell(&c->type, &v, &b, &why);
    free(unq);
    if (r != TYPE_OK) {
        buf_free(&b);
        return fail(s, pos, "column `%s`: DEFAULT %.*s is not a valid %s: %s", c->name, (int)n, p,
                    c->type_text, why);
    }
    c->default_cell = arena_str(&s->ds->arena, b.p ? b.p : "", b.len);
    c->default_len = (uint32_t)b.len;
    buf_free(&b);
    return c->default_cell ? 0 : nomem(s, pos);
}

/* MARK: - The SCHEMA block */

struct cursor {
    size_t i, end;
};

static void skip_blank(struct parser *s, struct cursor *k)
{
    for (;;) {
        while (k->i < k->end && anyblank(s->text[k->i]))
            k->i++;
        if (k->i < k->end && s->text[k->i] == '#') { /* a comment to the end of the line */
            while (k->i < k->end && s->text[k->i] != '\n')
                k->i++;
            continue;
        }
        return;
    }
}

static int at_word(struct parser *s, const struct cursor *k, const char *w)
{
    size_t l = strlen(w);
    return k->end - k->i >= l && memcmp(s->text + k->i, w, l) == 0 &&
           (k->i + l == k->end || !ident_char(s->text[k->i + l]));
}

/* Scans an expression (a type or a DEFAULT) from k->i: up to a ',', '`' or line end
 * outside parentheses, brackets and quotes, or the words DEFAULT or CODEC there, or the
 * block's end (so that a missing ',' between columns is caught on its line). Returns the end of its
 * text (blanks trimmed); -1 when a quote or bracket is open. */
static int scan_expr(struct parser *s, struct cursor *k, size_t *end)
{
    const char *t = s->text;
    int depth = 0;
    size_t start = k->i;
    *end = start;
    while (k->i < k->end) {
        char c = t[k->i];
        if (c == '\'' || c == '"') {
            size_t q = k->i++;
            while (k->i < k->end && t[k->i] != c && t[k->i] != '\n')
                k->i += t[k->i] == '\\' ? 2 : 1;
            if (k->i >= k->end || t[k->i] != c)
                return fail(s, q, "unterminated quote");
            k->i++;
            continue;
        }
        if (c == '(' || c == '[') {
            depth++;
        } else if (c == ')' || c == ']') {
            if (--depth < 0)
                return fail(s, k->i, "unbalanced '%c'", c);
        } else if (depth == 0 && (c == ',' || c == '`' || c == '\n' ||
                                  (k->i > start && anyblank(t[k->i - 1]) &&
                                   (at_word(s, k, "DEFAULT") || at_word(s, k, "CODEC"))))) {
            break;
        }
        k->i++;
    }
    if (depth > 0)
        return fail(s, k->i, "unbalanced '('");
    size_t e = k->i;
    while (e > start && anyblank(t[e - 1]))
        e--;
    *end = e;
    return 0;
}

static int parse_column(struct parser *s, struct cursor *k)
{
    const char *t = s->text;
    struct datasource *ds = s->ds;
    size_t at = k->i;
    if (ds->ncolumns == DS_MAX_COLUMNS)
        return fail(s, at, "more than %d columns", DS_MAX_COLUMNS);
    struct ds_column *c = &ds->columns[ds->ncolumns];
    memset(c, 0, sizeof *c);
    c->line = line_at(s, at);

    /* The name: `backquoted` or a bare identifier. */
    size_t ns, ne;
    if (t[k->i] == '`') {
        ns = ++k->i;
        while (k->i < k->end && t[k->i] != '`' && t[k->i] != '\n')
            k->i++;
        if (k->i >= k->end || t[k->i] != '`')
            return fail(s, at, "unterminated `column name`");
        ne = k->i++;
    } else if (ident_start(t[k->i])) {
        ns = k->i;
        while (k->i < k->end && ident_char(t[k->i]))
            k->i++;
        ne = k->i;
    } else {
        return fail(s, at, "expected a column name, found '%c'", t[k->i]);
    }
    if (ne == ns)
        return fail(s, at, "empty column name");
    if (ne - ns > DS_MAX_NAME)
        return fail(s, at, "column name longer than %d bytes", DS_MAX_NAME);
    /* The name is kept NUL-terminated (the header row, the default path's key) and is a CSV
     * header and an SQL name: a control byte there is a mistake, and NUL would cut it. */
    for (size_t j = ns; j < ne; j++)
        if ((unsigned char)t[j] < 0x20 || t[j] == 0x7f)
            return fail(s, at, "column name holds the control byte 0x%02x", (unsigned char)t[j]);
    for (size_t j = 0; j < ds->ncolumns; j++)
        if (ds->columns[j].name_len == ne - ns && memcmp(ds->columns[j].name, t + ns, ne - ns) == 0)
            return fail(s, at, "duplicate column `%.*s` (first on line %d)", (int)(ne - ns), t + ns,
                        ds->columns[j].line);
    if (!(c->name = arena_str(&ds->arena, t + ns, ne - ns)))
        return nomem(s, at);
    c->name_len = (uint32_t)(ne - ns);

    /* The type. */
    skip_blank(s, k);
    size_t ts = k->i, te;
    if (scan_expr(s, k, &te))
        return -1;
    if (te == ts)
        return fail(s, ts, "column `%s`: expected a type", c->name);
    const char *why;
    if (!(c->type_text = arena_str(&ds->arena, t + ts, te - ts)))
        return nomem(s, ts);
    if (type_parse(&c->type, t + ts, te - ts, &why))
        return fail(s, ts, "column `%s`: %s: %s", c->name, why, c->type_text);

    /* Then `json:$.path`, DEFAULT and CODEC, in any order, each at most once. */
    size_t path_at = 0;
    int codec = 0;
    const char *path = NULL;
    size_t path_len = 0;
    size_t last = te; /* the end of what the column holds so far */
    for (;;) {
        skip_blank(s, k);
        if (k->i >= k->end || t[k->i] == ',')
            break;
        size_t a = k->i;
        int is_path = k->end - a >= 6 && memcmp(t + a, "`json:", 6) == 0;
        /* A column may span lines, so a name on a later line (a `backquoted` one that is no
         * path, or a bare one that is no keyword) is the next column, the ',' forgotten: say
         * so at the line that lacks it rather than puzzle over the name. */
        if (!is_path && memchr(t + last, '\n', a - last) &&
            (t[a] == '`' ||
             (ident_start(t[a]) && !at_word(s, k, "DEFAULT") && !at_word(s, k, "CODEC"))))
            return fail(s, last, "missing ',' after column `%s`", c->name);
        if (t[a] == '`') {
            if (!is_path)
                return fail(s, a, "column `%s`: expected `json:$.path`", c->name);
            if (path)
                return fail(s, a, "column `%s`: a second `json:` path", c->name);
            k->i = a + 6;
            while (k->i < k->end && t[k->i] != '`' && t[k->i] != '\n')
                k->i++;
            if (k->i >= k->end || t[k->i] != '`')
                return fail(s, a, "column `%s`: unterminated `json:` path", c->name);
            path = t + a + 6;
            path_len = k->i - a - 6;
            path_at = a;
            k->i++;
        } else if (at_word(s, k, "DEFAULT")) {
            if (c->has_default)
                return fail(s, a, "column `%s`: a second DEFAULT", c->name);
            k->i += 7;
            skip_blank(s, k);
            size_t ds0 = k->i, de;
            if (scan_expr(s, k, &de))
                return -1;
            if (de == ds0)
                return fail(s, a, "column `%s`: DEFAULT needs a value", c->name);
            if (compile_default(s, a, c, t + ds0, de - ds0))
                return -1;
        } else if (at_word(s, k, "CODEC")) {
            /* Storage compression: ClickHouse's business, accepted and ignored here. */
            if (codec++)
                return fail(s, a, "column `%s`: a second CODEC", c->name);
            k->i += 5;
            skip_blank(s, k);
            int depth = 0;
            if (k->i >= k->end || t[k->i] != '(')
                return fail(s, a, "column `%s`: expected CODEC(...)", c->name);
            for (; k->i < k->end; k->i++) {
                depth += t[k->i] == '(';
                if (t[k->i] == ')' && --depth == 0)
                    break;
            }
            if (k->i >= k->end)
                return fail(s, a, "column `%s`: unbalanced CODEC(...)", c->name);
            k->i++;
        } else {
            return fail(s, a, "column `%s`: unexpected '%c' after the type (a missing ','?)",
                        c->name, t[a]);
        }
        last = k->i;
    }
    if (!path) {
        /* Our choice: no path means the top-level key of the column's name. */
        char *dflt = arena_alloc(&ds->arena, c->name_len + 3);
        if (!dflt)
            return nomem(s, at);
        dflt[0] = '$';
        dflt[1] = '.';
        memcpy(dflt + 2, c->name, c->name_len + 1);
        c->path = dflt;
        c->steps = NULL;
        c->nsteps = 1;
        struct json_step *st = arena_alloc(&ds->arena, sizeof *st);
        if (!st)
            return nomem(s, at);
        *st = (struct json_step){JSON_STEP_KEY, c->name_len, 0, c->name};
        c->steps = st;
    } else {
        if (!(c->path = arena_str(&ds->arena, path, path_len)))
            return nomem(s, path_at);
        if (compile_path(s, path_at, c, path, path_len))
            return -1;
    }
    ds->ncolumns++;
    return 0;
}

static int parse_schema(struct parser *s, size_t start, size_t end, size_t at)
{
    struct cursor k = {start, end};
    skip_blank(s, &k);
    if (k.i >= k.end)
        return fail(s, at, "SCHEMA has no columns");
    for (;;) {
        if (parse_column(s, &k))
            return -1;
        skip_blank(s, &k);
        if (k.i >= k.end)
            return 0;
        /* parse_column stops only at a ',' or the end */
        size_t comma = k.i++;
        skip_blank(s, &k);
        if (k.i >= k.end)
            return fail(s, comma, "a ',' after the last column");
    }
}

/* MARK: - Instructions */

/* Instructions kept as settings. Connector instructions (KAFKA_*, IMPORT_*) are refused:
 * this server has no connectors, and silently ignoring them would mislead. */
static const char *const known[] = {
    "DESCRIPTION",        "ENGINE",         "ENGINE_SORTING_KEY", "ENGINE_PARTITION_KEY",
    "ENGINE_PRIMARY_KEY", "ENGINE_TTL",     "ENGINE_SETTINGS",    "ENGINE_VER",
    "ENGINE_SIGN",        "ENGINE_VERSION", "ENGINE_IS_DELETED",  "INDEXES",
    "FORWARD_QUERY",      "TAGS",
};

/* The value of an inline instruction: trimmed, its surrounding double quotes removed. */
static char *inline_value(struct parser *s, const char *p, size_t n)
{
    while (n && hblank(p[n - 1]))
        n--;
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"') {
        p++;
        n -= 2;
    }
    return arena_str(&s->ds->arena, p, n);
}

/* The value of a block: its lines trimmed, blank ones at both ends dropped, joined by \n. */
static char *block_value(struct parser *s, size_t start, size_t end)
{
    char *v = arena_alloc(&s->ds->arena, end - start + 1), *w = v;
    if (!v)
        return NULL;
    size_t i = start;
    int any = 0, pending = 0;
    while (i < end) {
        size_t e = i;
        while (e < end && s->text[e] != '\n')
            e++;
        size_t a = i, b = e;
        while (a < b && hblank(s->text[a]))
            a++;
        while (b > a && hblank(s->text[b - 1]))
            b--;
        if (a == b) {
            pending += any;
        } else {
            for (; any && pending >= 0; pending--)
                *w++ = '\n';
            pending = 0;
            memcpy(w, s->text + a, b - a);
            w += b - a;
            any = 1;
        }
        i = e + 1;
    }
    *w = 0;
    return v;
}

static int parse_token(struct parser *s, size_t at, const char *p, size_t n)
{
    struct datasource *ds = s->ds;
    if (ds->ntokens == DS_MAX_TOKENS)
        return fail(s, at, "more than %d TOKEN lines", DS_MAX_TOKENS);
    size_t i = 0, ns, ne;
    if (i < n && p[i] == '"') {
        ns = ++i;
        while (i < n && p[i] != '"')
            i++;
        if (i >= n)
            return fail(s, at, "unterminated token name");
        ne = i++;
    } else {
        ns = i;
        while (i < n && !hblank(p[i]))
            i++;
        ne = i;
    }
    while (i < n && hblank(p[i]))
        i++;
    size_t ss = i;
    while (i < n && !hblank(p[i]))
        i++;
    size_t se = i;
    while (i < n && hblank(p[i]))
        i++;
    int append = se - ss == 6 && memcmp(p + ss, "APPEND", 6) == 0;
    int read = se - ss == 4 && memcmp(p + ss, "READ", 4) == 0;
    if (ne == ns || i != n || !(append || read))
        return fail(s, at, "expected TOKEN name APPEND (or READ)");
    if (ne - ns > DS_MAX_NAME)
        return fail(s, at, "token name longer than %d bytes", DS_MAX_NAME);
    struct ds_token *tk = &ds->tokens[ds->ntokens];
    tk->name = arena_str(&ds->arena, p + ns, ne - ns);
    tk->scope = append ? "APPEND" : "READ";
    tk->line = line_at(s, at);
    if (!tk->name)
        return nomem(s, at);
    ds->ntokens++;
    return 0;
}

static int parse_instructions(struct parser *s)
{
    const char *t = s->text;
    size_t i = 0, schema_at = 0;
    int schema = 0;
    while (i < s->len) {
        size_t ls = i, le = i;
        while (le < s->len && t[le] != '\n')
            le++;
        size_t a = ls;
        while (a < le && hblank(t[a]))
            a++;
        if (a == le || t[ls] == '#') { /* blank, or a comment */
            i = le + 1;
            continue;
        }
        if (a != ls)
            return fail(s, ls, "indented line outside a block (a block follows KEY >)");
        size_t ke = ls;
        while (ke < le && upper_word(t[ke]))
            ke++;
        if (ke == ls || (ke < le && !hblank(t[ke])))
            return fail(s, ls, "expected an instruction such as SCHEMA >, found '%.*s'",
                        (int)(le - ls > 40 ? 40 : le - ls), t + ls);
        const char *key = t + ls;
        size_t kl = ke - ls, vs = ke;
        while (vs < le && hblank(t[vs]))
            vs++;
        size_t ve = le;
        while (ve > vs && hblank(t[ve - 1]))
            ve--;
        int block = ve - vs == 1 && t[vs] == '>';
        size_t bs = le + 1, be = bs; /* a block: the indented (or blank) lines below */
        if (block) {
            size_t j = bs, last = bs;
            while (j < s->len) {
                size_t e = j;
                while (e < s->len && t[e] != '\n')
                    e++;
                size_t f = j;
                while (f < e && hblank(t[f]))
                    f++;
                if (f != e && f == j)
                    break; /* a line at column 0 ends the block */
                j = e + 1;
                if (f != e)
                    last = e;
            }
            be = last > s->len ? s->len : last;
            if (be < bs)
                be = bs;
            i = j;
        } else {
            i = le + 1;
        }
        if (kl == 6 && memcmp(key, "SCHEMA", 6) == 0) {
            if (schema)
                return fail(s, ls, "a second SCHEMA (the first on line %d)", line_at(s, schema_at));
            if (!block)
                return fail(s, ls, "SCHEMA takes an indented block: SCHEMA >");
            schema = 1;
            schema_at = ls;
            if (parse_schema(s, bs, be, ls))
                return -1;
            continue;
        }
        if (kl == 5 && memcmp(key, "TOKEN", 5) == 0) {
            if (block)
                return fail(s, ls, "expected TOKEN name APPEND (or READ)");
            if (parse_token(s, ls, t + vs, ve - vs))
                return -1;
            continue;
        }
        size_t k;
        for (k = 0; k < sizeof known / sizeof *known; k++)
            if (strlen(known[k]) == kl && memcmp(known[k], key, kl) == 0)
                break;
        if (k == sizeof known / sizeof *known)
            return fail(s, ls, "unknown instruction %.*s", (int)kl, key);
        struct datasource *ds = s->ds;
        for (size_t j = 0; j < ds->nsettings; j++)
            if (strcmp(ds->settings[j].key, known[k]) == 0)
                return fail(s, ls, "a second %s (the first on line %d)", known[k],
                            ds->settings[j].line);
        if (!block && ve == vs)
            return fail(s, ls, "%s needs a value", known[k]);
        /* inline_value takes off the quotes around a value; one left open is a mistake */
        if (!block && t[vs] == '"' && (ve - vs < 2 || t[ve - 1] != '"'))
            return fail(s, ls, "%s: unterminated '\"'", known[k]);
        if (ds->nsettings == DS_MAX_SETTINGS) /* cannot happen: each known key once */
            return fail(s, ls, "too many instructions");
        struct ds_setting *st = &ds->settings[ds->nsettings];
        st->key = known[k];
        st->line = line_at(s, ls);
        st->value = block ? block_value(s, bs, be) : inline_value(s, t + vs, ve - vs);
        if (!st->value)
            return nomem(s, ls);
        ds->nsettings++;
    }
    if (!schema)
        return fail(s, s->len ? s->len - 1 : 0, "no SCHEMA");
    return 0;
}

/* The columns for the JSON engine, which finds each one's value along its path; and each
 * column's cell for a missing or null value, found once here rather than per line. */
static int compile_columns(struct parser *s)
{
    struct datasource *ds = s->ds;
    for (size_t i = 0; i < ds->ncolumns; i++) {
        struct ds_column *c = &ds->columns[i];
        const char *e = NULL;
        size_t n = 0;
        if (c->has_default)
            e = c->default_cell, n = c->default_len;
        else if (c->type.array_depth) /* the empty array (doc/datasets.md, section 3) */
            e = "\"[]\"", n = 4;
        else if (c->type.nullable)
            e = "\\N", n = 2;
        if (!e)
            continue;
        /* copied with zeros after it up to DS_EMPTY_PAD: datasource_cell moves that many */
        char *padded = arena_alloc(&ds->arena, n > DS_EMPTY_PAD ? n : DS_EMPTY_PAD);
        if (!padded)
            return nomem(s, 0);
        memset(padded, 0, n > DS_EMPTY_PAD ? n : DS_EMPTY_PAD);
        if (n)
            memcpy(padded, e, n);
        c->empty_cell = padded, c->empty_len = (uint32_t)n;
    }
    struct json_column_spec specs[DS_MAX_COLUMNS];
    for (size_t i = 0; i < ds->ncolumns; i++)
        specs[i] = (struct json_column_spec){ds->columns[i].name, ds->columns[i].steps,
                                             ds->columns[i].nsteps};
    char err[256];
    if (!json_columns_init_paths(&ds->json, specs, ds->ncolumns, err, sizeof err))
        return 0;
    /* The paths were checked as they were parsed: out of memory, in practice. */
    s->failed = 1;
    snprintf(s->err, s->errlen, "%s:%d: %s", s->file, ds->columns[0].line, err);
    return -1;
}

/* MARK: - Public */

struct datasource *datasource_parse(const char *file, const char *text, size_t len, char *err,
                                    size_t errlen)
{
    struct parser s = {file, text, len, NULL, err, errlen, 0, 0, 1};
    if (errlen)
        err[0] = 0;
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    size_t bl = strlen(base);
    if (bl > 11 && strcmp(base + bl - 11, ".datasource") == 0)
        bl -= 11;
    int valid = bl && bl <= DS_MAX_NAME && ident_start(base[0]);
    for (size_t i = 0; valid && i < bl; i++)
        valid = ident_char(base[i]);
    if (!valid) {
        snprintf(err, errlen,
                 "%s: a dataset's name is letters, digits and '_', not starting "
                 "with a digit, at most %d bytes",
                 file, DS_MAX_NAME);
        return NULL;
    }
    s.ds = calloc(1, sizeof *s.ds);
    if (!s.ds || !(s.ds->columns = calloc(DS_MAX_COLUMNS, sizeof *s.ds->columns))) {
        snprintf(err, errlen, "%s: out of memory", file);
        datasource_free(s.ds);
        return NULL;
    }
    if (!(s.ds->name = arena_str(&s.ds->arena, base, bl)))
        nomem(&s, 0);
    if (s.failed || parse_instructions(&s) || compile_columns(&s)) {
        datasource_free(s.ds);
        return NULL;
    }
    /* Nothing points into the columns any more (the JSON engine copied what it needs). */
    struct ds_column *fit = s.ds->ncolumns
        ? realloc(s.ds->columns, s.ds->ncolumns * sizeof *fit) : NULL;
    if (fit)
        s.ds->columns = fit;
    return s.ds;
}

struct datasource *datasource_load(const char *path, char *err, size_t errlen)
{
    size_t pl = strlen(path);
    if (pl < 11 || strcmp(path + pl - 11, ".datasource") != 0) {
        snprintf(err, errlen, "%s: a definition's file name ends in .datasource", path);
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *text = malloc(DS_MAX_FILE + 1);
    size_t n = text ? fread(text, 1, DS_MAX_FILE + 1, f) : 0;
    int bad = !text || ferror(f);
    fclose(f);
    struct datasource *ds = NULL;
    if (bad)
        snprintf(err, errlen, "%s: %s", path, text ? "read error" : "out of memory");
    else if (n > DS_MAX_FILE)
        snprintf(err, errlen, "%s: larger than %d bytes", path, DS_MAX_FILE);
    else
        ds = datasource_parse(path, text, n, err, errlen);
    free(text);
    return ds;
}

void datasource_free(struct datasource *ds)
{
    if (!ds)
        return;
    json_columns_free(&ds->json);
    arena_free(ds->arena);
    free(ds->columns);
    free(ds);
}

const char *datasource_setting(const struct datasource *ds, const char *key)
{
    for (size_t i = 0; i < ds->nsettings; i++)
        if (strcmp(ds->settings[i].key, key) == 0)
            return ds->settings[i].value;
    return NULL;
}
