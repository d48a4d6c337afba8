/* ready: a service for bench/stack.py. Sleeps D milliseconds (its own
 * "ready delay"), sends READY=1 to $NOTIFY_SOCKET (a path, or an abstract
 * name written "@..."), then waits for a signal. Usage: ready D */
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long ms = argc > 1 ? atol(argv[1]) : 0;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    const char *path = getenv("NOTIFY_SOCKET");
    if (path && *path) {
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        size_t n = strlen(path);
        if (n >= sizeof a.sun_path) return 2;
        memcpy(a.sun_path, path, n);
        if (path[0] == '@') a.sun_path[0] = '\0';
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return 3;
        const char msg[] = "READY=1";
        if (sendto(fd, msg, sizeof msg - 1, 0, (struct sockaddr *)&a,
                   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0)
            return 4;
        close(fd);
    }
    for (;;) pause();
}
