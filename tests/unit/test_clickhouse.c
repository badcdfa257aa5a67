/* test_clickhouse.c -- unit tests of the ClickHouse client without a server: the
 * classification of responses (bodies as 18.16 sends them), the URL, and the credentials
 * file, whose content never appears in an error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <unistd.h>

#include "delivery/clickhouse.h"
#include "testutil.h"

static enum send_result classify(int status, const char *body, int *code)
{
    return clickhouse_classify(status, body, strlen(body), code);
}

/* Bodies copied from 18.16's answers (tests/integration/test_delivery_clickhouse_client.py
 * provokes each one against the real server). */
static void test_classify_by_code_not_status(void **state)
{
    (void)state;
    int code;
    assert_int_equal(classify(200, "", &code), SEND_STORED);
    assert_int_equal(code, 0);
    assert_int_equal(classify(500, "Code: 49, e.displayText() = DB::Exception: Unknown element "
                                   "'c' for type Enum8('a' = 1, 'b' = 2), e.what() = "
                                   "DB::Exception\n", &code),
                     SEND_REFUSED);
    assert_int_equal(code, 49);
    /* 49 is LOGICAL_ERROR, a server bug, unless it names an unknown element. */
    assert_int_equal(classify(500, "Code: 49, e.displayText() = DB::Exception: Bad cast", &code),
                     SEND_RETRY);
    /* The same refusal with another status (18.16 says 400 for 26 and 41). */
    assert_int_equal(classify(400, "Code: 41, e.displayText() = DB::Exception: Cannot parse "
                                   "datetime: (at row 1)\n\nRow 1:\n", &code),
                     SEND_REFUSED);
    assert_int_equal(code, 41);
    static const int refused[] = {26, 27, 38, 69, 72, 117, 130, 131, 376, 691, 6, 53, 70};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char body[128];
        snprintf(body, sizeof body, "Code: %d, e.displayText() = DB::Exception: x", refused[i]);
        assert_int_equal(classify(500, body, &code), SEND_REFUSED);
        assert_int_equal(code, refused[i]);
    }
    /* Newer servers: "Code: 27. DB::Exception: ..." */
    assert_int_equal(classify(400, "Code: 27. DB::Exception: Cannot parse input", &code),
                     SEND_REFUSED);
    assert_int_equal(code, 27);
}

static void test_classify_table_config_retry(void **state)
{
    (void)state;
    int code;
    assert_int_equal(classify(404, "Code: 60, e.displayText() = DB::Exception: Table "
                                   "default.nope doesn't exist., e.what() = DB::Exception\n",
                              &code),
                     SEND_TABLE);
    assert_int_equal(classify(500, "Code: 16, e.displayText() = DB::Exception: No such column "
                                   "zz in table t", &code),
                     SEND_TABLE);
    static const int config[] = {81, 115, 164, 192, 193, 194, 195, 497, 516};
    for (size_t i = 0; i < sizeof config / sizeof config[0]; i++) {
        char body[64];
        snprintf(body, sizeof body, "Code: %d, e.displayText() = x", config[i]);
        assert_int_equal(classify(401, body, &code), SEND_CONFIG);
    }
    static const int retry[] = {241, 242, 252, 999, 202, 159, 209, 210, 225, 319, 1};
    for (size_t i = 0; i < sizeof retry / sizeof retry[0]; i++) {
        char body[64];
        snprintf(body, sizeof body, "Code: %d, e.displayText() = x", retry[i]);
        assert_int_equal(classify(500, body, &code), SEND_RETRY);
        assert_int_equal(code, retry[i]);
    }
    /* No code: the status decides, and only 401/403 are not worth retrying. */
    assert_int_equal(classify(503, "Service Unavailable", &code), SEND_RETRY);
    assert_int_equal(code, 0);
    assert_int_equal(classify(502, "", &code), SEND_RETRY);
    assert_int_equal(classify(429, "slow down", &code), SEND_RETRY);
    assert_int_equal(classify(401, "Unauthorized", &code), SEND_CONFIG);
    assert_int_equal(classify(403, "", &code), SEND_CONFIG);
    /* No response at all: connection refused, reset, timed out. */
    assert_int_equal(classify(0, "", &code), SEND_RETRY);
    /* "Code:" inside the text, not at its start, is not the server's code. */
    assert_int_equal(classify(500, "proxy error: Code: 27", &code), SEND_RETRY);
    assert_int_equal(code, 0);
    /* A body cut short of its digits. */
    assert_int_equal(classify(500, "Code: ", &code), SEND_RETRY);
}

static const char *write_file(const char *text)
{
    static char path[64];
    strcpy(path, "/tmp/test_clickhouse_cred.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_urls(void **state)
{
    (void)state;
    char err[256];
    struct clickhouse_config cfg = {"clickhouse://127.0.0.1:8123/events", NULL, 1000, 5000, 0};
    struct clickhouse *ch = clickhouse_open(&cfg, err, sizeof err);
    assert_non_null(ch);
    assert_int_equal(clickhouse_shards(ch), 1);
    assert_string_equal(clickhouse_database(ch), "events");
    clickhouse_close(ch);
    cfg.url = "clickhouse://a:1|b:2,c,[::1]:9000/db?table_suffix=_local";
    ch = clickhouse_open(&cfg, err, sizeof err);
    if (!ch)
        fail_msg("%s", err);
    assert_int_equal(clickhouse_shards(ch), 3);
    assert_string_equal(clickhouse_database(ch), "db");
    clickhouse_close(ch);
    cfg.url = "clickhouse:///";
    ch = clickhouse_open(&cfg, err, sizeof err);
    assert_non_null(ch);
    assert_string_equal(clickhouse_database(ch), "default");
    clickhouse_close(ch);
    static const char *bad[] = {"http://127.0.0.1:8123/db", "clickhouse://h:0/db",
                                "clickhouse://h:99999/db", "clickhouse://h:x/db",
                                "clickhouse://h/db?user=x", "clickhouse://h,h:/db"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg.url = bad[i];
        err[0] = '\0';
        ch = clickhouse_open(&cfg, err, sizeof err);
        if (ch)
            fail_msg("%s: accepted", bad[i]);
        assert_true(err[0] != '\0');
    }
    /* A password in the URL is refused, and not echoed. */
    cfg.url = "clickhouse://user:Sekr1tMarker@127.0.0.1:8123/db";
    assert_null(clickhouse_open(&cfg, err, sizeof err));
    assert_null(strstr(err, "Sekr1tMarker"));
    assert_non_null(strstr(err, "--deliver-credentials"));
}

static void test_credentials_file(void **state)
{
    (void)state;
    char err[256];
    struct clickhouse_config cfg = {"clickhouse://127.0.0.1:8123/db", NULL, 1000, 5000, 0};
    /* Good: the password may hold ':' and the line may end in \r\n. */
    cfg.credentials_file = write_file("writer:pa:ss\r\nignored\n");
    struct clickhouse *ch = clickhouse_open(&cfg, err, sizeof err);
    if (!ch)
        fail_msg("%s", err);
    clickhouse_close(ch);
    unlink(cfg.credentials_file);
    /* Bad files: the message names the file, never its content. */
    static const char *bad[] = {"MarkerNoColon\n", ":MarkerNoUser\n", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg.credentials_file = write_file(bad[i]);
        err[0] = '\0';
        ch = clickhouse_open(&cfg, err, sizeof err);
        assert_null(ch);
        assert_non_null(strstr(err, cfg.credentials_file));
        assert_null(strstr(err, "Marker"));
        unlink(cfg.credentials_file);
    }
    cfg.credentials_file = "/nonexistent/ch.cred";
    assert_null(clickhouse_open(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/ch.cred"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_by_code_not_status),
        cmocka_unit_test(test_classify_table_config_retry),
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_credentials_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
