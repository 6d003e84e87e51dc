/* tinyhello: the demo and test workload. One static binary, a few hundred KB.
 *
 *   tinyhello [serve]   print a line every TINYHELLO_INTERVAL seconds (default 5) until SIGTERM;
 *                       exits with 3 after TINYHELLO_CRASH_AFTER seconds when that is set.
 *   tinyhello health    exit 0, or 1 when TINYHELLO_HEALTH=fail (the image's HEALTHCHECK).
 *
 * Behaviour comes from the environment so one binary makes good, crashing and unhealthy releases.
 */
#include <signal.h>
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
    say("tinyhello up, version ", version ? version : "unknown");
    time_t start = time(NULL);
    while (!stop) {
        if (crash >= 0 && time(NULL) - start >= crash) {
            say("tinyhello crashing on purpose", NULL);
            return 3;
        }
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
        if ((time(NULL) - start) % interval == 0) say("tinyhello alive, version ", version ? version : "unknown");
    }
    say("tinyhello stopping", NULL);
    return 0;
}
