/* The sandbox ("pause") process of the real test node's pods: PID 1 of each pod sandbox.
 * It holds the pod's namespaces open, so it only waits: for a signal, forever. As PID 1 it also
 * reaps the zombies of processes re-parented to it (a pod with a shared PID namespace), and it
 * exits 0 on SIGINT or SIGTERM (PID 1 has no default action for them: without handlers the
 * runtime's stop would always end in SIGKILL). Written for sheepdog's tests; built static by
 * tests/cluster/build so the image needs nothing else. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_stop(int sig) { (void)sig; stop = 1; }

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("sheepdog-pause 1");
        return 0;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    while (!stop)
        pause(); /* returns after each handled signal */
    return 0;
}
