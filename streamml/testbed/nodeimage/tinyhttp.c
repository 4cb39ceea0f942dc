/* A tiny static HTTP responder and probe for the local node's tests (no base image needed).
 *   tinyhttp serve PORT       answer every request with "pod=<hostname>\n"; exit on SIGTERM
 *   tinyhttp get HOST PORT    resolve HOST (resolv.conf search list, as any pod), GET /, print */
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }

static int serve(int port) {
    char host[256] = "?", reply[512], buf[4096];
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    gethostname(host, sizeof host - 1);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) || listen(fd, 64)) {
        perror("bind");
        return 1;
    }
    int body = snprintf(buf, sizeof buf, "pod=%s\n", host);
    snprintf(reply, sizeof reply,
             "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
             "Connection: close\r\n\r\n%s", body, buf);
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        (void)!read(c, buf, sizeof buf);
        (void)!write(c, reply, strlen(reply));
        close(c);
    }
}

static int get(const char *host, const char *port) {
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    char buf[4096];
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc) {
        fprintf(stderr, "resolve %s: %s\n", host, gai_strerror(rc));
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, res->ai_addr, res->ai_addrlen)) {
        perror("connect");
        return 3;
    }
    int n = snprintf(buf, sizeof buf, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", host);
    (void)!write(fd, buf, n);
    while ((n = read(fd, buf, sizeof buf)) > 0) fwrite(buf, 1, n, stdout);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    if (argc == 3 && !strcmp(argv[1], "serve")) return serve(atoi(argv[2]));
    if (argc == 4 && !strcmp(argv[1], "get")) return get(argv[2], argv[3]);
    fprintf(stderr, "usage: tinyhttp serve PORT | tinyhttp get HOST PORT\n");
    return 64;
}
