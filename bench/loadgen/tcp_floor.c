/* tcp_floor: what the kernel alone charges for loadgen's traffic pattern on this machine.
 *
 * One process writes a 350-byte frame every 20 ms to each of N loopback TCP sockets (spread over 10
 * send slots, like loadgen's ticker); a child reads them with epoll. Both print their CPU per socket,
 * in % of a core: a load generator that writes a caller's frames and reads the daemon's appends cannot
 * cost less per call than the two together.
 *
 * Build and run: gcc -std=c11 -O2 -Wall -Wextra -o /tmp/tcp_floor bench/loadgen/tcp_floor.c && /tmp/tcp_floor [N] [SECS]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)r.ru_utime.tv_sec + (double)r.ru_stime.tv_sec +
           ((double)r.ru_utime.tv_usec + (double)r.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100;
    double secs = argc > 2 ? atof(argv[2]) : 10.0;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    socklen_t alen = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1024) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
        perror("listen");
        return 1;
    }
    if (fork() == 0) { /* the reader */
        int ep = epoll_create1(0);
        for (int i = 0; i < n; i++) {
            int fd = accept(lfd, NULL, NULL);
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
        static char buf[65536];
        struct epoll_event evs[256];
        double c0 = cpu_s(), t0 = now_s();
        long reads = 0;
        while (now_s() < t0 + secs + 0.5) {
            int k = epoll_wait(ep, evs, 256, 100);
            for (int i = 0; i < k; i++)
                if (read(evs[i].data.fd, buf, sizeof buf) > 0) reads++;
        }
        double pct = (cpu_s() - c0) / (now_s() - t0) * 100;
        printf("reader: %ld reads, %.2f %% of a core, %.4f %% per socket\n", reads, pct, pct / n);
        return 0;
    }
    int *fds = calloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++) {
        int one = 1;
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fds[i], (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("connect");
            return 1;
        }
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    char msg[350];
    memset(msg, 'x', sizeof msg);
    long writes = 0;
    double t0 = now_s(), c0 = cpu_s();
    for (long tick = 0; tick < (long)(secs / 0.02); tick++) {
        for (int g = 0; g < 10; g++) {
            double due = t0 + ((double)tick + g / 10.0) * 0.02;
            struct timespec ts = {(time_t)due, (long)((due - (double)(time_t)due) * 1e9)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            for (int i = g; i < n; i += 10)
                if (write(fds[i], msg, sizeof msg) > 0) writes++;
        }
    }
    double pct = (cpu_s() - c0) / (now_s() - t0) * 100;
    printf("writer: %ld writes, %.2f %% of a core, %.4f %% per socket\n", writes, pct, pct / n);
    fflush(stdout);
    wait(NULL);
    return 0;
}
