/* tinyhello: the demo and test workload. One static binary, a few hundred KB.
 *
 *   tinyhello [serve]   print a line every TINYHELLO_INTERVAL seconds (default 5) until SIGTERM;
 *                       exits with 3 after TINYHELLO_CRASH_AFTER seconds when that is set.
 *   tinyhello health    exit 0, or 1 when TINYHELLO_HEALTH=fail (the image's HEALTHCHECK).
 *
 * Update lock (agent.locks): with TINYHELLO_LOCK_FOR=N it holds /run/tinyfleet/update.lock from its
 * start for N seconds - {"owner": "tinyhello <version>", "expires": <epoch>} - then removes it: one
 * open() and one unlink(), no library. With TINYHELLO_LOCK_LEAK=1 it writes only its name (no expiry)
 * and never removes the lock, like a process that died holding it: the agent's lock lifetime ends it.
 *
 * Behaviour comes from the environment so one binary makes good, crashing and unhealthy releases.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static void say(const char *a, const char *b) {
    write(1, a, strlen(a));
    if (b) write(1, b, strlen(b));
    write(1, "\n", 1);
}

#define LOCK_PATH "/run/tinyfleet/update.lock"

static int take_lock(const char *version, int seconds, int leak) {
    char body[160];
    int n = leak ? snprintf(body, sizeof body, "tinyhello %s\n", version)
                 : snprintf(body, sizeof body, "{\"owner\": \"tinyhello %s\", \"expires\": %lld}\n", version,
                            (long long)time(NULL) + seconds);
    int fd = open(LOCK_PATH, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        say("tinyhello cannot take the update lock at ", LOCK_PATH);
        return 0;
    }
    write(fd, body, (size_t)n);
    close(fd);
    say("tinyhello took the update lock, version ", version);
    return 1;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "serve";
    if (strcmp(mode, "health") == 0) {
        const char *h = getenv("TINYHELLO_HEALTH");
        return (h && strcmp(h, "fail") == 0) ? 1 : 0;
    }
    signal(SIGTERM, on_signal);  /* PID 1 ignores SIGTERM unless it handles it */
    signal(SIGINT, on_signal);
    const char *version = getenv("TINYHELLO_VERSION");
    const char *interval_s = getenv("TINYHELLO_INTERVAL");
    const char *crash_s = getenv("TINYHELLO_CRASH_AFTER");
    int interval = interval_s ? atoi(interval_s) : 5;
    int crash = crash_s ? atoi(crash_s) : -1;
    if (interval < 1) interval = 1;
    const char *lock_s = getenv("TINYHELLO_LOCK_FOR");
    const char *leak_s = getenv("TINYHELLO_LOCK_LEAK");
    int lock_for = lock_s ? atoi(lock_s) : -1;
    int leak = leak_s && strcmp(leak_s, "1") == 0;
    say("tinyhello up, version ", version ? version : "unknown");
    time_t start = time(NULL);
    int locked = lock_for > 0 && take_lock(version ? version : "unknown", lock_for, leak);
    while (!stop) {
        if (locked && !leak && time(NULL) - start >= lock_for) {
            unlink(LOCK_PATH);
            locked = 0;
            say("tinyhello released the update lock, version ", version ? version : "unknown");
        }
        if (crash >= 0 && time(NULL) - start >= crash) {
            say("tinyhello crashing on purpose", NULL);
            return 3;
        }
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
        if ((time(NULL) - start) % interval == 0) say("tinyhello alive, version ", version ? version : "unknown");
    }
    if (locked && !leak) unlink(LOCK_PATH);  /* stopped while holding it (a forced update): let it go */
    say("tinyhello stopping", NULL);
    return 0;
}
