/* SPDX-License-Identifier: MIT */
/*
 * die_with(parent): in a forked server process, die when the process that
 * forked it dies, so that stopping the first process stops them all
 * (issue 19: a floor child outlived the bench).  PR_SET_PDEATHSIG only
 * watches from the moment it is set: a parent that died before that has
 * already handed this process to init (or a subreaper), so look once more.
 */
#ifndef DIE_WITH_H
#define DIE_WITH_H

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

static inline void
die_with(pid_t parent)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(1);
}

#endif
