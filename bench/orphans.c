/* orphans: run as the child of an init under test, in a fresh pid
 * namespace. Double-forks N orphans (each re-parented to PID 1) that all
 * wait on one pipe; closing it lets all N exit at once, a storm of zombies
 * for PID 1 to reap. Polls /proc until no zombie is left and prints the
 * milliseconds from the release. Usage: orphans N */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int zombies(void) {
    DIR *d = opendir("/proc");
    if (!d) return -1;
    struct dirent *e;
    int z = 0;
    char path[64], buf[512];
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')');
        if (p && p[1] == ' ' && p[2] == 'Z') z++;
    }
    closedir(d);
    return z;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10000;
    int gate[2];
    if (pipe(gate) != 0) return 1;
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) {
            if (fork() == 0) { /* the orphan: wait for the release, then die */
                char c;
                close(gate[1]);
                while (read(gate[0], &c, 1) > 0) {}
                _exit(0);
            }
            _exit(0);
        }
        if (p > 0) waitpid(p, NULL, 0); /* reap the middle one ourselves */
    }
    double made = now_ms();
    close(gate[1]); /* release: every orphan exits now */
    close(gate[0]);
    int z;
    usleep(1000);
    while ((z = zombies()) > 0) usleep(200);
    double done = now_ms();
    printf("orphans=%d create_ms=%.1f storm_reaped_ms=%.1f\n", n, made - t0, done - made);
    return z < 0 ? 1 : 0;
}
