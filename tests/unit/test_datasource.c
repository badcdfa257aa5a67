/* test_datasource.c -- unit tests of the .datasource parser: instructions, columns, paths,
 * DEFAULT, every error with its line, the limits, and the loader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <malloc.h>
#include <unistd.h>

#include "datasource.h"
#include "testutil.h"

static const char taxi[] = "DESCRIPTION >\n"
                           "    Taxi trips\n"
                           "\n"
                           "    from the city's feed\n"
                           "SCHEMA >\n"
                           "    `vendorid` UInt8 `json:$.vendorid`,\n"
                           "    `pickup_at` DateTime `json:$.tpep_pickup_datetime`,\n"
                           "    `distance` Float64 `json:$.trip_distance`,\n"
                           "    `total` Decimal(10, 2) `json:$.total_amount`,\n"
                           "    `zone` LowCardinality(String) `json:$.pickup.zone.name` "
                           "DEFAULT 'unknown',\n"
                           "    `tags` Array(String) `json:$.tags[:]`,\n"
                           "    `note` Nullable(String) `json:$.note`\n"
                           "\n"
                           "ENGINE \"MergeTree\"\n"
                           "ENGINE_SORTING_KEY \"pickup_at\"\n"
                           "TOKEN ingest APPEND\n"
                           "TOKEN \"dash board\" READ\n";

/* Parses text (from an exact-size copy, so ASan sees any read past it) as file. */
static struct datasource *parse(const char *file, const char *text, char *err, size_t errlen)
{
    size_t n = strlen(text);
    char *copy = tu_exact(text, n);
    struct datasource *ds = datasource_parse(file, copy, n, err, errlen);
    free(copy);
    return ds;
}

static struct datasource *parse_ok(const char *text)
{
    char err[512];
    struct datasource *ds = parse("t.datasource", text, err, sizeof err);
    if (!ds)
        fail_msg("refused: %s", err);
    return ds;
}

/* The text must be refused with exactly the message want ("t.datasource:LINE: ..."). */
static void parse_bad(const char *text, const char *want)
{
    char err[512];
    struct datasource *ds = parse("t.datasource", text, err, sizeof err);
    if (ds) {
        datasource_free(ds);
        fail_msg("accepted, expected %s", want);
    }
    if (strcmp(err, want) != 0)
        fail_msg("error \"%s\", expected \"%s\"", err, want);
}

static void expect_key(const struct json_step *st, const char *key, size_t len)
{
    assert_int_equal(st->kind, JSON_STEP_KEY);
    assert_int_equal(st->len, len);
    assert_memory_equal(st->key, key, len);
    assert_int_equal(st->key[len], 0);
}

static void test_taxi(void **state)
{
    (void)state;
    struct datasource *ds = parse_ok(taxi);
    assert_string_equal(ds->name, "t");
    assert_int_equal(ds->ncolumns, 7);
    static const char *const names[] = {"vendorid", "pickup_at", "distance", "total",
                                        "zone",     "tags",      "note"};
    for (size_t i = 0; i < 7; i++) {
        assert_string_equal(ds->columns[i].name, names[i]);
        assert_int_equal(ds->columns[i].line, 6 + (int)i);
    }
    const struct ds_column *c = ds->columns;
    assert_int_equal(c[0].type.kind, TYPE_UINT8);
    assert_string_equal(c[0].path, "$.vendorid");
    assert_int_equal(c[0].nsteps, 1);
    expect_key(&c[0].steps[0], "vendorid", 8);
    assert_int_equal(c[1].type.kind, TYPE_DATETIME);
    expect_key(&c[1].steps[0], "tpep_pickup_datetime", 20);
    assert_int_equal(c[3].type.kind, TYPE_DECIMAL);
    assert_int_equal(c[3].type.precision, 10);
    assert_int_equal(c[3].type.scale, 2);
    assert_string_equal(c[3].type_text, "Decimal(10, 2)");
    assert_int_equal(c[4].type.kind, TYPE_STRING);
    assert_true(c[4].type.low_cardinality);
    assert_int_equal(c[4].nsteps, 3);
    expect_key(&c[4].steps[0], "pickup", 6);
    expect_key(&c[4].steps[1], "zone", 4);
    expect_key(&c[4].steps[2], "name", 4);
    assert_true(c[4].has_default);
    assert_string_equal(c[4].default_text, "'unknown'");
    assert_string_equal(c[4].default_cell, "\"unknown\"");
    assert_int_equal(c[5].type.array_depth, 1);
    assert_int_equal(c[5].nsteps, 2);
    assert_int_equal(c[5].steps[1].kind, JSON_STEP_EVERY);
    assert_true(c[6].type.nullable);
    assert_false(c[6].has_default);
    assert_string_equal(datasource_setting(ds, "DESCRIPTION"),
                        "Taxi trips\n\nfrom the city's feed");
    assert_string_equal(datasource_setting(ds, "ENGINE"), "MergeTree");
    assert_string_equal(datasource_setting(ds, "ENGINE_SORTING_KEY"), "pickup_at");
    assert_null(datasource_setting(ds, "ENGINE_TTL"));
    assert_int_equal(ds->ntokens, 2);
    assert_string_equal(ds->tokens[0].name, "ingest");
    assert_string_equal(ds->tokens[0].scope, "APPEND");
    assert_int_equal(ds->tokens[0].line, 16);
    assert_string_equal(ds->tokens[1].name, "dash board");
    assert_string_equal(ds->tokens[1].scope, "READ");
    datasource_free(ds);
}

static void test_syntax_variants(void **state)
{
    (void)state;
    /* Bare names, no paths (then $.name), CODEC anywhere, comments, CRLF, blocks for
     * ENGINE_* settings, every ENGINE instruction Tinybird documents. */
    struct datasource *ds = parse_ok("# a comment\r\n"
                                     "SCHEMA >\r\n"
                                     "  a Int32,\r\n"
                                     "  # a comment in the block\n"
                                     "  b Nullable(String) CODEC(ZSTD(1)) `json:$.b`,\n"
                                     "\tc String `json:$.c` DEFAULT '' CODEC(LZ4)\n"
                                     "ENGINE ReplacingMergeTree\n"
                                     "ENGINE_PARTITION_KEY toYYYYMM(d)\n"
                                     "ENGINE_TTL >\n"
                                     "    d + INTERVAL 1 DAY\n"
                                     "ENGINE_SETTINGS index_granularity=8192\n"
                                     "ENGINE_VER v\n"
                                     "ENGINE_SIGN s\n"
                                     "ENGINE_VERSION v\n"
                                     "ENGINE_PRIMARY_KEY a\n"
                                     "ENGINE_IS_DELETED x\n"
                                     "INDEXES >\n"
                                     "    INDEX i a TYPE minmax GRANULARITY 1\n"
                                     "FORWARD_QUERY >\n"
                                     "    SELECT a, b, c\n"
                                     "TAGS \"x\"\n"
                                     "DESCRIPTION one \"line\"\n");
    assert_int_equal(ds->ncolumns, 3);
    assert_string_equal(ds->columns[0].name, "a");
    assert_string_equal(ds->columns[0].path, "$.a");
    expect_key(&ds->columns[0].steps[0], "a", 1);
    assert_int_equal(ds->columns[1].line, 5);
    assert_string_equal(ds->columns[1].path, "$.b");
    assert_int_equal(ds->columns[2].line, 6);
    assert_string_equal(ds->columns[2].default_cell, "\"\"");
    assert_string_equal(datasource_setting(ds, "ENGINE"), "ReplacingMergeTree");
    assert_string_equal(datasource_setting(ds, "ENGINE_TTL"), "d + INTERVAL 1 DAY");
    assert_string_equal(datasource_setting(ds, "DESCRIPTION"), "one \"line\"");
    assert_string_equal(datasource_setting(ds, "TAGS"), "x");
    assert_int_equal(ds->nsettings, 13);
    datasource_free(ds);

    /* A column may span lines; the type may hold quotes and commas. */
    ds = parse_ok("SCHEMA >\n"
                  "    `t`\n"
                  "        DateTime64(3, 'UTC')\n"
                  "        `json:$.t`\n"
                  "        DEFAULT now64(3),\n"
                  "    `odd name, with comma` String `json:$['odd name, with comma']`\n");
    assert_int_equal(ds->columns[0].type.kind, TYPE_DATETIME64);
    assert_true(ds->columns[0].default_is_expr);
    assert_string_equal(ds->columns[0].default_text, "now64(3)");
    assert_string_equal(ds->columns[1].name, "odd name, with comma");
    expect_key(&ds->columns[1].steps[0], "odd name, with comma", 20);
    assert_int_equal(ds->columns[1].line, 6);
    datasource_free(ds);
}

static void test_paths(void **state)
{
    (void)state;
    struct datasource *ds = parse_ok("SCHEMA >\n"
                                     "    a String `json:$.a.b.c`,\n"
                                     "    b String `json:$['key with.dots']`,\n"
                                     "    c String `json:$.a['b']`,\n"
                                     "    d String `json:$[\"dq\"][0]`,\n"
                                     "    e String `json:$.list[12].x`,\n"
                                     "    f Array(Int8) `json:$.n[:]`,\n"
                                     "    g Array(String) `json:$.items[:].id`,\n"
                                     "    h Array(Array(UInt8)) `json:$.m[:][:]`,\n"
                                     "    i String `json:$['it\\'s \\\\ [x]']`,\n"
                                     "    j String `json:$.caf\xc3\xa9-1`,\n"
                                     "    k Array(String) `json:$.plain`\n");
    const struct ds_column *c = ds->columns;
    assert_int_equal(c[0].nsteps, 3);
    expect_key(&c[0].steps[2], "c", 1);
    assert_int_equal(c[1].nsteps, 1);
    expect_key(&c[1].steps[0], "key with.dots", 13);
    expect_key(&c[2].steps[0], "a", 1);
    expect_key(&c[2].steps[1], "b", 1);
    expect_key(&c[3].steps[0], "dq", 2);
    assert_int_equal(c[3].steps[1].kind, JSON_STEP_INDEX);
    assert_int_equal(c[3].steps[1].index, 0);
    assert_int_equal(c[4].nsteps, 3);
    assert_int_equal(c[4].steps[1].kind, JSON_STEP_INDEX);
    assert_int_equal(c[4].steps[1].index, 12);
    expect_key(&c[4].steps[2], "x", 1);
    assert_int_equal(c[5].steps[1].kind, JSON_STEP_EVERY);
    assert_int_equal(c[6].nsteps, 3);
    assert_int_equal(c[6].steps[1].kind, JSON_STEP_EVERY);
    expect_key(&c[6].steps[2], "id", 2);
    assert_int_equal(c[7].steps[1].kind, JSON_STEP_EVERY);
    assert_int_equal(c[7].steps[2].kind, JSON_STEP_EVERY);
    expect_key(&c[8].steps[0], "it's \\ [x]", 10);
    assert_string_equal(c[8].path, "$['it\\'s \\\\ [x]']");
    expect_key(&c[9].steps[0], "caf\xc3\xa9-1", 7);
    assert_int_equal(c[10].nsteps, 1);
    datasource_free(ds);
}

static void test_errors(void **state)
{
    (void)state;
    parse_bad("", "t.datasource:1: no SCHEMA");
    parse_bad("DESCRIPTION x\nENGINE MergeTree\n", "t.datasource:2: no SCHEMA");
    parse_bad("SCHEMA >\n  a Int8\nSCHEMA >\n  b Int8\n",
              "t.datasource:3: a second SCHEMA (the first on line 1)");
    parse_bad("SCHEMA a Int8\n", "t.datasource:1: SCHEMA takes an indented block: SCHEMA >");
    parse_bad("SCHEMA >\n\n", "t.datasource:1: SCHEMA has no columns");
    parse_bad("SCHEMA >\n  a Int8\nKAFKA_TOPIC t\n",
              "t.datasource:3: unknown instruction KAFKA_TOPIC");
    parse_bad("SCHEMA >\n  a Int8\n\n\nPIPE x\n", "t.datasource:5: unknown instruction PIPE");
    parse_bad("schema >\n  a Int8\n",
              "t.datasource:1: expected an instruction such as SCHEMA >, found 'schema >'");
    parse_bad("  SCHEMA >\n",
              "t.datasource:1: indented line outside a block (a block follows KEY >)");
    parse_bad("SCHEMA >\n  a Int8\nENGINE A\nENGINE B\n",
              "t.datasource:4: a second ENGINE (the first on line 3)");
    parse_bad("SCHEMA >\n  a Int8\nENGINE\n", "t.datasource:3: ENGINE needs a value");
    parse_bad("SCHEMA >\n  a Int8\nENGINE \"MergeTree\n",
              "t.datasource:3: ENGINE: unterminated '\"'");
    parse_bad("SCHEMA >\n  a Int8\nENGINE_SORTING_KEY \"\n",
              "t.datasource:3: ENGINE_SORTING_KEY: unterminated '\"'");
    parse_bad("SCHEMA >\n  a Int8\nTOKEN t\n",
              "t.datasource:3: expected TOKEN name APPEND (or READ)");
    parse_bad("SCHEMA >\n  a Int8\nTOKEN t WRITE\n",
              "t.datasource:3: expected TOKEN name APPEND (or READ)");
    parse_bad("SCHEMA >\n  a Int8\nTOKEN t APPEND extra\n",
              "t.datasource:3: expected TOKEN name APPEND (or READ)");
    parse_bad("SCHEMA >\n  a Int8\nTOKEN \"t APPEND\n", "t.datasource:3: unterminated token name");
    /* Columns */
    parse_bad("SCHEMA >\n  a Int8,\n  `b` Int9\n",
              "t.datasource:3: column `b`: unknown or unsupported type: Int9");
    parse_bad("SCHEMA >\n  a Int8,\n\n  `b`\n", "t.datasource:4: column `b`: expected a type");
    parse_bad("SCHEMA >\n  a Int8,\n  a Int16\n",
              "t.datasource:3: duplicate column `a` (first on line 2)");
    parse_bad("SCHEMA >\n  a Int8,\n", "t.datasource:2: a ',' after the last column");
    /* A missing ',' is named, at the line it belongs to, whatever ends the column before. */
    parse_bad("SCHEMA >\n  a Int8\n  b Int8\n", "t.datasource:2: missing ',' after column `a`");
    parse_bad("SCHEMA >\n  `a` Int8 `json:$.a`\n  `b` Int8 `json:$.b`\n",
              "t.datasource:2: missing ',' after column `a`");
    parse_bad("SCHEMA >\n  a Int8\n  `b` Int8 `json:$.b`\n",
              "t.datasource:2: missing ',' after column `a`");
    parse_bad("SCHEMA >\n  a String `json:$.a` DEFAULT 'x'\n\n  # b next\n  b Int8\n",
              "t.datasource:2: missing ',' after column `a`");
    parse_bad("SCHEMA >\n  a Int8,\n  b Int8 CODEC(ZSTD(1))\n  c Int8\n",
              "t.datasource:3: missing ',' after column `b`");
    parse_bad("SCHEMA >\n  a Int8 `json:$.a` b Int8\n",
              "t.datasource:2: column `a`: unexpected 'b' after the type (a missing ','?)");
    parse_bad("SCHEMA >\n  `a Int8\n", "t.datasource:2: unterminated `column name`");
    parse_bad("SCHEMA >\n  `` Int8\n", "t.datasource:2: empty column name");
    parse_bad("SCHEMA >\n  1a Int8\n", "t.datasource:2: expected a column name, found '1'");
    parse_bad("SCHEMA >\n  a Decimal(10, 2\n", "t.datasource:2: unbalanced '('");
    parse_bad("SCHEMA >\n  a Int8)\n", "t.datasource:2: unbalanced ')'");
    parse_bad("SCHEMA >\n  a DateTime('UTC\n", "t.datasource:2: unterminated quote");
    parse_bad("SCHEMA >\n  a Nullable(Array(Int8))\n",
              "t.datasource:2: column `a`: Nullable cannot hold an Array: Nullable(Array(Int8))");
    parse_bad("SCHEMA >\n  a Int8 CODEC ZSTD\n", "t.datasource:2: column `a`: expected CODEC(...)");
    parse_bad("SCHEMA >\n  a Int8 CODEC(ZSTD) CODEC(LZ4)\n",
              "t.datasource:2: column `a`: a second CODEC");
    /* Paths */
    parse_bad("SCHEMA >\n  a Int8 `json:$.a` `json:$.b`\n",
              "t.datasource:2: column `a`: a second `json:` path");
    parse_bad("SCHEMA >\n  a Int8 `jsn:$.a`\n",
              "t.datasource:2: column `a`: expected `json:$.path`");
    parse_bad("SCHEMA >\n  a Int8 `json:$.a\n",
              "t.datasource:2: column `a`: unterminated `json:` path");
    parse_bad("SCHEMA >\n  a Int8 `json:a`\n",
              "t.datasource:2: column `a`: a path starts with $: `json:$.key`");
    parse_bad("SCHEMA >\n  a Int8 `json:`\n",
              "t.datasource:2: column `a`: a path starts with $: `json:$.key`");
    parse_bad("SCHEMA >\n  a Int8 `json:$`\n",
              "t.datasource:2: column `a`: the path must name a key: `json:$.key`");
    parse_bad("SCHEMA >\n  a Int8 `json:$.`\n", "t.datasource:2: column `a`: empty key in path");
    parse_bad("SCHEMA >\n  a Int8 `json:$.a..b`\n",
              "t.datasource:2: column `a`: empty key in path");
    parse_bad("SCHEMA >\n  a Int8 `json:$['']`\n", "t.datasource:2: column `a`: empty key in path");
    parse_bad("SCHEMA >\n  a Int8 `json:$.a b`\n",
              "t.datasource:2: column `a`: ' ' in a key: write $['...'] for such keys");
    parse_bad("SCHEMA >\n  a Int8 `json:$.a]`\n",
              "t.datasource:2: column `a`: ']' in a key: write $['...'] for such keys");
    parse_bad("SCHEMA >\n  a Int8 `json:$['a`\n",
              "t.datasource:2: column `a`: unterminated ['key'] in path");
    parse_bad("SCHEMA >\n  a Int8 `json:$['a'x`\n",
              "t.datasource:2: column `a`: unterminated ['key'] in path");
    parse_bad("SCHEMA >\n  a Int8 `json:$.a[x]`\n",
              "t.datasource:2: column `a`: expected ['key'], [N] or [:] in path");
    parse_bad("SCHEMA >\n  a Int8 `json:$.a[-1]`\n",
              "t.datasource:2: column `a`: expected ['key'], [N] or [:] in path");
    parse_bad("SCHEMA >\n  a Int8 `json:$.a[1`\n",
              "t.datasource:2: column `a`: expected ']' after the index");
    parse_bad("SCHEMA >\n  a Int8 `json:$.a[4294967296]`\n",
              "t.datasource:2: column `a`: array index too large");
    parse_bad("SCHEMA >\n  a Int8 `json:$a`\n",
              "t.datasource:2: column `a`: expected '.' or '[' in path at 'a'");
    parse_bad("SCHEMA >\n  a Int8 `json:$.a[:]`\n",
              "t.datasource:2: column `a`: [:] needs an Array column, one Array per [:]");
    parse_bad("SCHEMA >\n  a Array(Int8) `json:$.a[:][:]`\n",
              "t.datasource:2: column `a`: [:] needs an Array column, one Array per [:]");
    /* DEFAULT */
    parse_bad(
        "SCHEMA >\n  a UInt8 `json:$.a` DEFAULT 256\n",
        "t.datasource:2: column `a`: DEFAULT 256 is not a valid UInt8: out of range for UInt8");
    parse_bad(
        "SCHEMA >\n  a UInt8 DEFAULT -1\n",
        "t.datasource:2: column `a`: DEFAULT -1 is not a valid UInt8: out of range for UInt8");
    parse_bad("SCHEMA >\n  a Int8 DEFAULT 'x'\n",
              "t.datasource:2: column `a`: DEFAULT 'x' is not a valid Int8: expected an integer");
    parse_bad("SCHEMA >\n  a Date DEFAULT '2023-02-29'\n",
              "t.datasource:2: column `a`: DEFAULT '2023-02-29' is not a valid Date: not a valid "
              "date or time");
    parse_bad(
        "SCHEMA >\n  a Decimal(5, 1) DEFAULT 1.25\n",
        "t.datasource:2: column `a`: DEFAULT 1.25 is not a valid Decimal(5, 1): scale exceeds 1");
    parse_bad("SCHEMA >\n  a String DEFAULT NULL\n",
              "t.datasource:2: column `a`: DEFAULT NULL needs a Nullable column");
    parse_bad("SCHEMA >\n  a String DEFAULT 'it's'\n", "t.datasource:2: unterminated quote");
    parse_bad("SCHEMA >\n  a String DEFAULT 'a' 'b'\n",
              "t.datasource:2: column `a`: unescaped ' in the DEFAULT string");
    parse_bad("SCHEMA >\n  a String DEFAULT\n",
              "t.datasource:2: column `a`: DEFAULT needs a value");
    parse_bad("SCHEMA >\n  a String DEFAULT 'x' DEFAULT 'y'\n",
              "t.datasource:2: column `a`: a second DEFAULT");
    /* The line of an error deep in a file. */
    parse_bad(
        "DESCRIPTION >\n  x\n\n  y\nSCHEMA >\n  a Int8,\n\n  b Int8,\n  c Int8 `json:$.c[:]`\n",
        "t.datasource:9: column `c`: [:] needs an Array column, one Array per [:]");
}

static void test_names(void **state)
{
    (void)state;
    char err[256];
    /* A control byte in a column name is refused: the header row and the default path's key
     * are NUL-terminated, and a CSV header or SQL name with a line end is a trap anyway. */
    static const char bytes[] = {0, 1, '\t', '\r', 0x1b, 0x1f, 0x7f};
    for (size_t i = 0; i < sizeof bytes; i++) {
        char text[] = "SCHEMA >\n  a Int8,\n  `nul?x` Int8\n";
        char *q = strchr(text, '?');
        *q = bytes[i];
        char *copy = tu_exact(text, sizeof text - 1);
        struct datasource *ds = datasource_parse("t.datasource", copy, sizeof text - 1, err,
                                                 sizeof err);
        free(copy);
        char want[128];
        snprintf(want, sizeof want, "t.datasource:3: column name holds the control byte 0x%02x",
                 (unsigned char)bytes[i]);
        if (ds)
            datasource_free(ds);
        assert_null(ds);
        assert_string_equal(err, want);
    }
    /* Bytes past ASCII and the other printable ones are names as any. */
    struct datasource *ds = parse_ok("SCHEMA >\n  `caf\xc3\xa9 \\ \"x\", ~` Int8\n");
    assert_string_equal(ds->columns[0].name, "caf\xc3\xa9 \\ \"x\", ~");
    datasource_free(ds);
    ds = parse("dir.x/events_2.datasource", "SCHEMA >\n  a Int8\n", err, sizeof err);
    assert_non_null(ds);
    assert_string_equal(ds->name, "events_2");
    datasource_free(ds);
    assert_null(parse("dir/2events.datasource", "SCHEMA >\n  a Int8\n", err, sizeof err));
    assert_non_null(strstr(err, "dir/2events.datasource: a dataset's name"));
    assert_null(parse("ev-ents.datasource", "SCHEMA >\n  a Int8\n", err, sizeof err));
    assert_null(parse(".datasource", "SCHEMA >\n  a Int8\n", err, sizeof err));
    /* A tiny error buffer still gets a terminated prefix of the message. */
    char tiny[8];
    assert_null(parse("t.datasource", "", tiny, sizeof tiny));
    assert_string_equal(tiny, "t.datas");
}

/* Writes a schema with count columns; name_len, path_depth shape the first column. */
static char *schema_text(size_t count, size_t name_len, size_t path_depth, size_t key_len)
{
    size_t cap = 64 + count * 32 + name_len + path_depth * 4 + key_len + DS_MAX_PATH * 2;
    char *t = malloc(cap);
    assert_non_null(t);
    size_t o = (size_t)snprintf(t, cap, "SCHEMA >\n    `");
    memset(t + o, 'n', name_len);
    o += name_len;
    o += (size_t)snprintf(t + o, cap - o, "` String `json:$");
    for (size_t d = 0; d < path_depth; d++)
        o += (size_t)snprintf(t + o, cap - o, d == 0 && key_len ? ".%0*d" : ".k", (int)key_len, 0);
    o += (size_t)snprintf(t + o, cap - o, "`");
    for (size_t i = 1; i < count; i++)
        o += (size_t)snprintf(t + o, cap - o, ",\n    c%zu Int8", i);
    o += (size_t)snprintf(t + o, cap - o, "\n");
    return t;
}

static void test_limits(void **state)
{
    (void)state;
    char err[256];
    char *t = schema_text(DS_MAX_COLUMNS, 1, 1, 0);
    struct datasource *ds = parse("t.datasource", t, err, sizeof err);
    assert_non_null(ds);
    assert_int_equal(ds->ncolumns, DS_MAX_COLUMNS);
    datasource_free(ds);
    free(t);
    t = schema_text(DS_MAX_COLUMNS + 1, 1, 1, 0);
    assert_null(parse("t.datasource", t, err, sizeof err));
    assert_string_equal(err, "t.datasource:258: more than 256 columns");
    free(t);

    t = schema_text(1, DS_MAX_NAME, 1, 0);
    ds = parse("t.datasource", t, err, sizeof err);
    assert_non_null(ds);
    assert_int_equal(ds->columns[0].name_len, DS_MAX_NAME);
    datasource_free(ds);
    free(t);
    t = schema_text(1, DS_MAX_NAME + 1, 1, 0);
    assert_null(parse("t.datasource", t, err, sizeof err));
    assert_string_equal(err, "t.datasource:2: column name longer than 256 bytes");
    free(t);

    t = schema_text(1, 1, DS_MAX_DEPTH, 0);
    ds = parse("t.datasource", t, err, sizeof err);
    assert_non_null(ds);
    assert_int_equal(ds->columns[0].nsteps, DS_MAX_DEPTH);
    datasource_free(ds);
    free(t);
    t = schema_text(1, 1, DS_MAX_DEPTH + 1, 0);
    assert_null(parse("t.datasource", t, err, sizeof err));
    assert_string_equal(err, "t.datasource:2: column `n`: path deeper than 32 steps");
    free(t);

    t = schema_text(1, 1, 1, DS_MAX_NAME);
    ds = parse("t.datasource", t, err, sizeof err);
    assert_non_null(ds);
    assert_int_equal(ds->columns[0].steps[0].len, DS_MAX_NAME);
    datasource_free(ds);
    free(t);
    t = schema_text(1, 1, 1, DS_MAX_NAME + 1);
    assert_null(parse("t.datasource", t, err, sizeof err));
    assert_string_equal(err, "t.datasource:2: column `n`: a path key longer than 256 bytes");
    free(t);

    /* The whole path's length: 1024 bytes pass, 1025 do not ($ + 511 ".k" = 1023). */
    t = schema_text(1, 1, 511, 0);
    ds = parse("t.datasource", t, err, sizeof err);
    assert_null(ds);
    assert_string_equal(err, "t.datasource:2: column `n`: path deeper than 32 steps");
    free(t);
    char text[DS_MAX_PATH + 64];
    int n = snprintf(text, sizeof text, "SCHEMA >\n  a String `json:$['");
    memset(text + n, 'k', DS_MAX_PATH - 5);
    snprintf(text + n + DS_MAX_PATH - 5, sizeof text - (size_t)n - DS_MAX_PATH + 5, "']`\n");
    assert_null(parse("t.datasource", text, err, sizeof err)); /* 1024 bytes, a key too long */
    assert_string_equal(err, "t.datasource:2: column `a`: a path key longer than 256 bytes");
    n = snprintf(text, sizeof text, "SCHEMA >\n  a String `json:$['");
    memset(text + n, 'k', DS_MAX_PATH - 4);
    snprintf(text + n + DS_MAX_PATH - 4, sizeof text - (size_t)n - DS_MAX_PATH + 4, "']`\n");
    assert_null(parse("t.datasource", text, err, sizeof err));
    assert_string_equal(err, "t.datasource:2: column `a`: path longer than 1024 bytes");

    /* TOKEN lines */
    size_t cap = 64 + (DS_MAX_TOKENS + 1) * 24;
    t = malloc(cap);
    size_t o = (size_t)snprintf(t, cap, "SCHEMA >\n  a Int8\n");
    for (int i = 0; i < DS_MAX_TOKENS; i++)
        o += (size_t)snprintf(t + o, cap - o, "TOKEN t%d APPEND\n", i);
    ds = parse("t.datasource", t, err, sizeof err);
    assert_non_null(ds);
    assert_int_equal(ds->ntokens, DS_MAX_TOKENS);
    datasource_free(ds);
    snprintf(t + o, cap - o, "TOKEN one_more APPEND\n");
    assert_null(parse("t.datasource", t, err, sizeof err));
    assert_string_equal(err, "t.datasource:67: more than 64 TOKEN lines");
    free(t);
}

/* Writes column col's cell for value (NULL: missing) of the given kind. */
static enum type_result cell_of(const struct datasource *ds, size_t col, const char *value,
                                uint32_t kind, char *got, size_t cap)
{
    struct cell v = {value, value ? (uint32_t)strlen(value) : 0, value ? kind : CELL_EMPTY};
    struct buf b = {0};
    const char *why = NULL;
    enum type_result r = datasource_cell(&ds->columns[col], &v, &b, &why);
    snprintf(got, cap, "%.*s", (int)b.len, b.p ? b.p : "");
    if (r != TYPE_OK)
        snprintf(got, cap, "%s", why);
    buf_free(&b);
    return r;
}

static void test_null_and_default(void **state)
{
    (void)state;
    struct datasource *ds = parse_ok("SCHEMA >\n"
                                     "    a UInt8,\n"
                                     "    b UInt8 DEFAULT 7,\n"
                                     "    c Nullable(UInt8),\n"
                                     "    d Nullable(UInt8) DEFAULT 7,\n"
                                     "    e Nullable(String) DEFAULT NULL,\n"
                                     "    f DateTime DEFAULT now(),\n"
                                     "    g Array(String) DEFAULT [],\n"
                                     "    h DateTime64(3) DEFAULT '2024-02-29T23:00:00-01:00',\n"
                                     "    i String DEFAULT 'it''s \\\\ \"q\"',\n"
                                     "    j Bool DEFAULT false,\n"
                                     "    k Decimal(10, 2) DEFAULT -1.50,\n"
                                     "    l Array(Int8)\n");
    char got[128];
    /* non-Nullable, no DEFAULT: missing or null is quarantined */
    assert_int_equal(cell_of(ds, 0, NULL, 0, got, sizeof got), TYPE_ERR_NULL);
    assert_string_equal(got, "null for a non-Nullable column");
    assert_int_equal(cell_of(ds, 0, "3", CELL_RAW, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "3");
    /* DEFAULT fills missing and null; a value present is still checked */
    assert_int_equal(cell_of(ds, 1, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "7");
    assert_int_equal(cell_of(ds, 1, "300", CELL_RAW, got, sizeof got), TYPE_ERR_RANGE);
    /* Nullable without DEFAULT: \N */
    assert_int_equal(cell_of(ds, 2, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "\\N");
    /* Nullable with DEFAULT: the DEFAULT wins, as in ClickHouse */
    assert_int_equal(cell_of(ds, 3, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "7");
    assert_int_equal(cell_of(ds, 4, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "\\N");
    /* an expression: an empty cell for ClickHouse to fill */
    assert_true(ds->columns[5].default_is_expr);
    assert_int_equal(cell_of(ds, 5, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "");
    assert_int_equal(cell_of(ds, 5, "2024-01-01 00:00:00", CELL_STRING, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "2024-01-01 00:00:00");
    assert_int_equal(cell_of(ds, 6, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "\"[]\"");
    assert_int_equal(cell_of(ds, 7, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "2024-03-01 00:00:00.000");
    assert_int_equal(cell_of(ds, 8, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "\"it's \\ \"\"q\"\"\"");
    assert_int_equal(cell_of(ds, 9, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "false");
    assert_int_equal(cell_of(ds, 10, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "-1.5");
    /* an Array without DEFAULT: missing or null is the empty array (never Nullable) */
    assert_int_equal(cell_of(ds, 11, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "\"[]\"");
    datasource_free(ds);
}

/* A DEFAULT string is decoded as ClickHouse decodes an SQL string literal. The bytes
 * expected are what 18.16 gives for the same literal (SELECT hex('...') on the server;
 * test_schema.py checks them there). */
static void test_default_escapes(void **state)
{
    (void)state;
    static const struct {
        const char *literal, *bytes;
        size_t len;
    } decoded[] = {
        {"\\x41", "A", 1},    {"\\x4a\\x4A", "JJ", 2}, {"\\xff", "\xff", 1}, {"\\0", "\0", 1},
        {"\\a", "\x07", 1},   {"\\b", "\x08", 1},      {"\\e", "\x1b", 1},   {"\\f", "\x0c", 1},
        {"\\n", "\n", 1},     {"\\r", "\r", 1},        {"\\t", "\t", 1},     {"\\v", "\x0b", 1},
        {"\\\\", "\\", 1},    {"\\'", "'", 1},         {"''", "'", 1},       {"a\\x20b", "a b", 3},
        {"\\x00\\x7f", "\0\x7f", 2},
    };
    for (size_t i = 0; i < sizeof decoded / sizeof *decoded; i++) {
        char text[128], want[16];
        snprintf(text, sizeof text, "SCHEMA >\n  a String DEFAULT '%s'\n", decoded[i].literal);
        print_message("%s\n", decoded[i].literal);
        struct datasource *ds = parse_ok(text);
        want[0] = '"';
        memcpy(want + 1, decoded[i].bytes, decoded[i].len);
        want[decoded[i].len + 1] = '"';
        assert_int_equal(ds->columns[0].default_len, decoded[i].len + 2);
        assert_memory_equal(ds->columns[0].default_cell, want, decoded[i].len + 2);
        /* the cell a missing value gets is that one */
        struct cell missing = {NULL, 0, CELL_EMPTY};
        struct buf b = {0};
        const char *why = NULL;
        assert_int_equal(datasource_cell(&ds->columns[0], &missing, &b, &why), TYPE_OK);
        assert_int_equal(b.len, decoded[i].len + 2);
        assert_memory_equal(b.p, want, decoded[i].len + 2);
        buf_free(&b);
        datasource_free(ds);
    }
    /* The escape applies before the type's check. */
    struct datasource *ds = parse_ok("SCHEMA >\n  a DateTime DEFAULT '2024-01-05\\x2001:02:03'\n");
    assert_string_equal(ds->columns[0].default_cell, "2024-01-05 01:02:03");
    datasource_free(ds);
    /* Any other escape is refused: 18.16 drops the backslash of \z, \u, \% and \", current
     * ClickHouse keeps it for some, \N is read as nothing, and \x takes two hex digits. */
    static const char *const refused[][2] = {
        {"\\z", "unknown escape \\z"},     {"\\u0041", "unknown escape \\u"},
        {"\\%", "unknown escape \\%"},     {"\\\"", "unknown escape \\\""},
        {"\\N", "unknown escape \\N"},     {"\\X41", "unknown escape \\X"},
        {"\\x4", "\\x needs two hex digits"}, {"\\x4g", "\\x needs two hex digits"},
        {"\\xzz", "\\x needs two hex digits"}, {"a\\x", "\\x needs two hex digits"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        char text[128], want[256];
        snprintf(text, sizeof text, "SCHEMA >\n  a Int8,\n  b String DEFAULT '%s'\n", refused[i][0]);
        snprintf(want, sizeof want,
                 "t.datasource:3: column `b`: %s in the DEFAULT string (ndingest reads \\xHH \\0 "
                 "\\a \\b \\e \\f \\n \\r \\t \\v \\\\ \\' and '')",
                 refused[i][1]);
        print_message("%s\n", refused[i][0]);
        parse_bad(text, want);
    }
}

/* A DEFAULT literal is checked against the target (--clickhouse-compat) when the file is
 * loaded, as any value is; and a float DEFAULT's cell is the normalised one. */
static void test_default_and_target(void **state)
{
    (void)state;
    const char *text = "SCHEMA >\n  d Date DEFAULT '2106-01-01',\n  t DateTime DEFAULT 4291747199\n";
    type_set_target(TYPE_TARGET_18_16);
    parse_bad(text, "t.datasource:2: column `d`: DEFAULT '2106-01-01' is not a valid Date: out of "
                    "range for Date (1970-01-01 to 2105-12-31)");
    parse_bad("SCHEMA >\n  t DateTime DEFAULT 4291747200\n",
              "t.datasource:2: column `t`: DEFAULT 4291747200 is not a valid DateTime: out of "
              "range for DateTime (1970-01-01 to 2105-12-31 23:59:59)");
    type_set_target(TYPE_TARGET_CURRENT);
    struct datasource *ds = parse_ok(text);
    char got[64];
    assert_int_equal(cell_of(ds, 0, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "2106-01-01");
    assert_int_equal(cell_of(ds, 1, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "2105-12-31 23:59:59");
    datasource_free(ds);
    ds = parse_ok("SCHEMA >\n  f Float64 DEFAULT 1.5E+00002,\n  g Float32 DEFAULT -0e400\n");
    assert_int_equal(cell_of(ds, 0, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "1.5e2");
    assert_int_equal(cell_of(ds, 1, NULL, 0, got, sizeof got), TYPE_OK);
    assert_string_equal(got, "-0");
    datasource_free(ds);
}

static void test_load(void **state)
{
    (void)state;
    char dir[] = "/tmp/ndingest-ds-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/trips.datasource", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(taxi, f);
    fclose(f);
    struct datasource *ds = datasource_load(path, err, sizeof err);
    if (!ds)
        fail_msg("%s", err);
    assert_string_equal(ds->name, "trips");
    assert_int_equal(ds->ncolumns, 7);
    datasource_free(ds);

    /* An error names the path and the line. */
    f = fopen(path, "wb");
    fputs("SCHEMA >\n  a Int8,\n  b Int99\n", f);
    fclose(f);
    assert_null(datasource_load(path, err, sizeof err));
    char want[256];
    snprintf(want, sizeof want, "%s:3: column `b`: unknown or unsupported type: Int99", path);
    assert_string_equal(err, want);

    /* Too large: DS_MAX_FILE bytes pass the size check, one more does not. */
    f = fopen(path, "wb");
    fputs("SCHEMA >\n  a Int8\n", f);
    for (long i = 18; i < DS_MAX_FILE; i++)
        fputc('\n', f);
    fclose(f);
    ds = datasource_load(path, err, sizeof err);
    if (!ds)
        fail_msg("%s", err);
    datasource_free(ds);
    f = fopen(path, "ab");
    fputc('\n', f);
    fclose(f);
    assert_null(datasource_load(path, err, sizeof err));
    snprintf(want, sizeof want, "%s: larger than %d bytes", path, DS_MAX_FILE);
    assert_string_equal(err, want);
    unlink(path);

    assert_null(datasource_load(path, err, sizeof err));
    snprintf(want, sizeof want, "%s: No such file or directory", path);
    assert_string_equal(err, want);
    snprintf(path, sizeof path, "%s/trips.txt", dir);
    assert_null(datasource_load(path, err, sizeof err));
    assert_non_null(strstr(err, "ends in .datasource"));
    rmdir(dir);
}

/* Every prefix of a definition parses or fails with a FILE:LINE message, never reading
 * past the text (ASan); lines named are within the prefix. */
static void test_prefixes(void **state)
{
    (void)state;
    static const char extra[] = "SCHEMA >\n"
                                "  `a b` Array(Nullable(DateTime64(3, 'UTC'))) "
                                "`json:$['x\\'y'].z[:]` DEFAULT [] CODEC(ZSTD(1)),\n"
                                "  c Decimal(10, 2) DEFAULT -1.5e-1 `json:$.c[3]`\n"
                                "TOKEN \"t t\" APPEND\n";
    const char *const texts[] = {taxi, extra};
    for (size_t k = 0; k < 2; k++) {
        size_t len = strlen(texts[k]);
        for (size_t n = 0; n <= len; n++) {
            char *copy = tu_exact(texts[k], n);
            char err[512];
            struct datasource *ds = datasource_parse("p.datasource", copy, n, err, sizeof err);
            if (ds) {
                datasource_free(ds);
            } else {
                int line = 0;
                if (sscanf(err, "p.datasource:%d: ", &line) != 1 || line < 1)
                    fail_msg("prefix %zu: message \"%s\"", n, err);
                int lines = 1;
                for (size_t i = 0; i + 1 < n; i++)
                    lines += copy[i] == '\n';
                if (line > lines)
                    fail_msg("prefix %zu: line %d of %d: %s", n, line, lines, err);
            }
            free(copy);
        }
    }
    char err[512];
    struct datasource *ds = parse("p.datasource", extra, err, sizeof err);
    if (!ds)
        fail_msg("%s", err);
    expect_key(&ds->columns[0].steps[0], "x'y", 3);
    assert_int_equal(ds->columns[0].steps[2].kind, JSON_STEP_EVERY);
    assert_string_equal(ds->columns[0].default_cell, "\"[]\"");
    assert_string_equal(ds->columns[1].default_cell, "-0.15");
    assert_int_equal(ds->columns[1].steps[1].index, 3);
    assert_string_equal(ds->tokens[0].name, "t t");
    datasource_free(ds);
}

/* Issue #15: every process holds every definition (and a reload two sets of them), so a
 * definition costs what its columns need: the seven-column trips definition was
 * ~58 KiB on the heap (room for 256 columns, a 16 KiB string block), and is under 32 KiB.
 * Measured with mallinfo2 over 100 copies (an ASan build's allocator reports nothing, and
 * then the bound holds trivially). */
static void test_heap_per_definition(void **state)
{
    (void)state;
    static const char trips[] =
        "DESCRIPTION >\n    Taxi trips\nSCHEMA >\n"
        "    `vendorid` UInt8 `json:$.vendorid`,\n"
        "    `pickup_at` DateTime `json:$.tpep_pickup_datetime`,\n"
        "    `distance` Float64 `json:$.trip_distance`,\n"
        "    `total` Decimal(10, 2) `json:$.total_amount`,\n"
        "    `zone` LowCardinality(String) `json:$.pickup.zone.name` DEFAULT 'unknown',\n"
        "    `tags` Array(String) `json:$.tags[:]`,\n"
        "    `note` Nullable(String) `json:$.note`\n"
        "ENGINE \"MergeTree\"\nENGINE_SORTING_KEY \"pickup_at\"\n";
    enum { N = 100 };
    struct datasource *ds[N];
    char err[256];
    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < N; i++)
        if (!(ds[i] = datasource_parse("trips.datasource", trips, sizeof trips - 1, err, sizeof err)))
            fail_msg("%s", err);
    struct mallinfo2 after = mallinfo2();
    size_t per = (after.uordblks - before.uordblks) / N;
    print_message("%zu bytes per definition\n", per);
    assert_true(per < 32 * 1024);
    assert_int_equal(ds[N - 1]->ncolumns, 7);
    assert_string_equal(ds[N - 1]->columns[6].name, "note");
    assert_string_equal(ds[N - 1]->columns[4].default_text, "'unknown'");
    for (int i = 0; i < N; i++)
        datasource_free(ds[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_taxi),
        cmocka_unit_test(test_syntax_variants),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_null_and_default),
        cmocka_unit_test(test_default_escapes),
        cmocka_unit_test(test_default_and_target),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_prefixes),
        cmocka_unit_test(test_heap_per_definition),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
