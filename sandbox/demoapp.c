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
 * With TINYHELLO_LOCK_HTTP=PORT as well it holds the lock without a file: it answers any request on PORT
 * with 423 {"holder": "tinyhello <version>", "expires_in": <seconds left>} while held, then 200 - the
 * release's update_lock.endpoint (protocol 1.4) tells the agent to ask. Sockets only, no library.
 *
 * Behaviour comes from the environment so one binary makes good, crashing and unhealthy releases.
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);  /* inside the container: the agent asks its bridge address */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 8) < 0) {
        say("tinyhello cannot listen for update-lock requests", NULL);
        return -1;
    }
    return fd;
}

/* One request, one answer, closed: the agent asks a few times a minute at most. */
static void answer_lock(int listener, const char *version, long left) {
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) return;
    char buf[1024], body[160], out[320];
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 500) > 0) read(fd, buf, sizeof buf);
    int n = left > 0 ? snprintf(body, sizeof body, "{\"holder\": \"tinyhello %s\", \"expires_in\": %ld}\n", version, left)
                     : snprintf(body, sizeof body, "{\"held\": false}\n");
    int m = snprintf(out, sizeof out, "HTTP/1.0 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     "Connection: close\r\n\r\n%s", left > 0 ? "423 Locked" : "200 OK", n, body);
    write(fd, out, (size_t)m);
    close(fd);
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
    const char *http_s = getenv("TINYHELLO_LOCK_HTTP");
    int listener = http_s ? listen_on(atoi(http_s)) : -1;
    if (!version) version = "unknown";
    say("tinyhello up, version ", version);
    time_t start = time(NULL);
    int locked = lock_for > 0 && (listener >= 0 || take_lock(version, lock_for, leak));
    if (locked && listener >= 0) say("tinyhello holds the update lock over HTTP, version ", version);
    while (!stop) {
        if (locked && !leak && time(NULL) - start >= lock_for) {
            if (listener < 0) unlink(LOCK_PATH);
            locked = 0;
            say("tinyhello released the update lock, version ", version);
        }
        if (crash >= 0 && time(NULL) - start >= crash) {
            say("tinyhello crashing on purpose", NULL);
            return 3;
        }
        struct pollfd p = {listener, POLLIN, 0};
        if (poll(&p, listener >= 0 ? 1 : 0, 1000) > 0) {  /* a lock request, or a one-second tick */
            answer_lock(listener, version, locked ? (long)(start + lock_for - time(NULL)) : 0);
            continue;
        }
        if ((time(NULL) - start) % interval == 0) say("tinyhello alive, version ", version);
    }
    if (locked && !leak && listener < 0) unlink(LOCK_PATH);  /* stopped while holding it (a forced update): let it go */
    say("tinyhello stopping", NULL);
    return 0;
}
