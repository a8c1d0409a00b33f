/*
 * test_config.c: configuration defaults, every variable's validation, the
 * .env file and the environment's precedence over it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "dsync.h"

static void clear_env(void)
{
    for (const dsync_config_var *v = dsync_config_vars(); v->name; v++)
        unsetenv(v->name);
}

static int setup(void **state)
{
    clear_env();
    return 0;
}

static int teardown(void **state)
{
    clear_env();
    return 0;
}

static void test_defaults_are_valid_and_documented(void **state)
{
    dsync_config cfg;
    char err[256] = "";
    assert_int_equal(dsync_config_load(&cfg, NULL, err, sizeof err), 0);
    assert_int_equal(dsync_config_validate(&cfg, err, sizeof err), 0);
    assert_int_equal(cfg.node_id, 1);
    assert_string_equal(cfg.http_addr, "127.0.0.1:8081");
    assert_string_equal(cfg.peer_addr, "127.0.0.1:9081");
    assert_int_equal(cfg.n_peers, 0);
    assert_string_equal(cfg.data_dir, "./data/node1");
    assert_string_equal(cfg.redis_url, "");
    assert_int_equal(cfg.max_body_bytes, 1048576);
    assert_int_equal(cfg.fault_injection, 0);
    assert_int_equal(cfg.lock_default_ttl_ms, 30000);
    assert_int_equal(cfg.log_level, DSYNC_LOG_INFO);
    /* Every variable has a default that sets itself cleanly. */
    for (const dsync_config_var *v = dsync_config_vars(); v->name; v++) {
        assert_int_equal(strncmp(v->name, "DSYNC_", 6), 0);
        assert_true(strlen(v->help) > 0);
        assert_int_equal(dsync_config_set(&cfg, v->name, v->default_value, err, sizeof err), 0);
    }
}

static void test_every_variable_takes_a_good_value(void **state)
{
    static const char *const good[][2] = {
        {"DSYNC_NODE_ID", "3"},
        {"DSYNC_HTTP_ADDR", "0.0.0.0:80"},
        {"DSYNC_PEER_ADDR", "node3:9083"},
        {"DSYNC_PEERS", " 1=node1:9081, 2=node2:9082 ,3=node3:9083"},
        {"DSYNC_DATA_DIR", "/var/lib/dsync"},
        {"DSYNC_REDIS_URL", "redis://redis:6379/2"},
        {"DSYNC_MAX_BODY_BYTES", "4096"},
        {"DSYNC_FAULT_INJECTION", "1"},
        {"DSYNC_LOCK_DEFAULT_TTL_MS", "1000"},
        {"DSYNC_LOCK_MAX_TTL_MS", "5000"},
        {"DSYNC_LOCK_MAX_WAIT_MS", "0"},
        {"DSYNC_HTTP_THREADS", "4"},
        {"DSYNC_HTTP_REQUEST_TIMEOUT_MS", "100"},
        {"DSYNC_LOG_LEVEL", "debug"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        setenv(good[i][0], good[i][1], 1);
    dsync_config cfg;
    char err[256] = "";
    assert_int_equal(dsync_config_load(&cfg, NULL, err, sizeof err), 0);
    assert_int_equal(cfg.node_id, 3);
    assert_int_equal(cfg.n_peers, 3);
    assert_int_equal(cfg.peers[1].id, 2);
    assert_string_equal(cfg.peers[1].addr, "node2:9082");
    assert_string_equal(cfg.redis_url, "redis://redis:6379/2");
    assert_int_equal(cfg.lock_max_wait_ms, 0);
    assert_int_equal(cfg.log_level, DSYNC_LOG_DEBUG);
    assert_int_equal(dsync_config_validate(&cfg, err, sizeof err), 0);
}

static void test_every_bad_value_is_refused_naming_its_variable(void **state)
{
    static const char *const bad[][2] = {
        {"DSYNC_NODE_ID", "0"},
        {"DSYNC_NODE_ID", "abc"},
        {"DSYNC_NODE_ID", "-1"},
        {"DSYNC_NODE_ID", "1x"},
        {"DSYNC_NODE_ID", ""},
        {"DSYNC_NODE_ID", "99999999999999999999999"},
        {"DSYNC_HTTP_ADDR", "localhost"},
        {"DSYNC_HTTP_ADDR", ":8080"},
        {"DSYNC_HTTP_ADDR", "host:0"},
        {"DSYNC_HTTP_ADDR", "host:65536"},
        {"DSYNC_HTTP_ADDR", "ho st:80"},
        {"DSYNC_PEER_ADDR", "x:y"},
        {"DSYNC_PEERS", "1=a:1,1=b:2"},
        {"DSYNC_PEERS", "1=a"},
        {"DSYNC_PEERS", "a:1"},
        {"DSYNC_PEERS", "0=a:1"},
        {"DSYNC_PEERS",
         "1=a:1,2=a:2,3=a:3,4=a:4,5=a:5,6=a:6,7=a:7,8=a:8,9=a:9,10=a:10,11=a:11,12=a:12,13=a:13,"
         "14=a:14,15=a:15,16=a:16,17=a:17"},
        {"DSYNC_REDIS_URL", "http://x:1"},
        {"DSYNC_REDIS_URL", "redis://x"},
        {"DSYNC_REDIS_URL", "redis://x:1/16"},
        {"DSYNC_MAX_BODY_BYTES", "1023"},
        {"DSYNC_FAULT_INJECTION", "2"},
        {"DSYNC_FAULT_INJECTION", "yes"},
        {"DSYNC_LOCK_DEFAULT_TTL_MS", "0"},
        {"DSYNC_LOCK_MAX_TTL_MS", "86400001"},
        {"DSYNC_LOCK_MAX_WAIT_MS", "3600001"},
        {"DSYNC_HTTP_THREADS", "0"},
        {"DSYNC_HTTP_REQUEST_TIMEOUT_MS", "99"},
        {"DSYNC_LOG_LEVEL", "loud"},
        {"DSYNC_SNAPSHOT_ENTRIES", "15"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clear_env();
        setenv(bad[i][0], bad[i][1], 1);
        dsync_config cfg;
        char err[256] = "";
        int rc = dsync_config_load(&cfg, NULL, err, sizeof err);
        if (rc != DSYNC_ECONFIG || !strstr(err, bad[i][0]))
            fail_msg("%s=\"%s\" gave %d (%s)", bad[i][0], bad[i][1], rc, err);
    }
}

static void test_validate_checks_values_against_each_other(void **state)
{
    dsync_config cfg;
    char err[256] = "";
    dsync_config_defaults(&cfg);
    cfg.lock_default_ttl_ms = cfg.lock_max_ttl_ms + 1;
    assert_int_equal(dsync_config_validate(&cfg, err, sizeof err), DSYNC_ECONFIG);
    assert_non_null(strstr(err, "DSYNC_LOCK_DEFAULT_TTL_MS"));

    dsync_config_defaults(&cfg);
    assert_int_equal(dsync_config_set(&cfg, "DSYNC_PEERS", "2=127.0.0.1:9082", err, sizeof err), 0);
    assert_int_equal(dsync_config_validate(&cfg, err, sizeof err), DSYNC_ECONFIG);
    assert_non_null(strstr(err, "not among the peers"));

    assert_int_equal(
        dsync_config_set(&cfg, "DSYNC_PEERS", "1=127.0.0.1:9999,2=127.0.0.1:9082", err, sizeof err),
        0);
    assert_int_equal(dsync_config_validate(&cfg, err, sizeof err), DSYNC_ECONFIG);
    assert_non_null(strstr(err, "DSYNC_PEER_ADDR"));
    assert_int_equal(dsync_config_set(&cfg, "DSYNC_NOPE", "1", err, sizeof err), DSYNC_ECONFIG);
}

static char *write_env_file(const char *text)
{
    static char path[64];
    strcpy(path, "/tmp/dsync-env-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_env_file_is_read_and_the_environment_wins(void **state)
{
    char *path = write_env_file("# a comment\n"
                                "\n"
                                "export DSYNC_NODE_ID=2\n"
                                "DSYNC_HTTP_ADDR=\"127.0.0.1:7000\"\n"
                                "DSYNC_DATA_DIR='/tmp/with space'\n"
                                "DSYNC_LOG_LEVEL=warn # trailing comment\n"
                                "OTHER_TOOL_SETTING=ignored\n");
    setenv("DSYNC_NODE_ID", "5", 1);
    dsync_config cfg;
    char err[256] = "";
    assert_int_equal(dsync_config_load(&cfg, path, err, sizeof err), 0);
    assert_int_equal(cfg.node_id, 5);
    assert_string_equal(cfg.http_addr, "127.0.0.1:7000");
    assert_string_equal(cfg.data_dir, "/tmp/with space");
    assert_int_equal(cfg.log_level, DSYNC_LOG_WARN);
    unlink(path);
    /* A missing file is fine. */
    assert_int_equal(dsync_config_load(&cfg, "/nonexistent/.env", err, sizeof err), 0);
}

static void test_env_file_mistakes_are_reported_with_their_line(void **state)
{
    static const char *const cases[][2] = {
        {"DSYNC_NODE_ID=1\nDSYNC_NODEID=2\n", ":2: DSYNC_NODEID"},
        {"DSYNC_NODE_ID=zero\n", "DSYNC_NODE_ID"},
        {"just words\n", ":1: expected NAME=VALUE"},
        {"DSYNC_DATA_DIR=\"unterminated\n", ":1: expected NAME=VALUE"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = write_env_file(cases[i][0]);
        dsync_config cfg;
        char err[256] = "";
        assert_int_equal(dsync_config_load(&cfg, path, err, sizeof err), DSYNC_ECONFIG);
        if (!strstr(err, cases[i][1]))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, cases[i][1]);
        unlink(path);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults_are_valid_and_documented, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_variable_takes_a_good_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_bad_value_is_refused_naming_its_variable, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_validate_checks_values_against_each_other, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_env_file_is_read_and_the_environment_wins, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_env_file_mistakes_are_reported_with_their_line, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
