/* The pod sandbox ("pause") process of the local node: holds the pod's namespaces, reaps
 * orphans, exits on SIGTERM/SIGINT. Built static (gcc -static), so its image is one file. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    signal(SIGCHLD, on_child);
    for (;;) pause();
}
