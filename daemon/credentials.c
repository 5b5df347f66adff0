/* SPDX-License-Identifier: MIT */
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "daemon.h"

/*
 * A pool's credentials, taken by each of its workers and by the short-lived
 * process that loads its plugins: everything here runs in a child of the
 * master, once, before any service code.
 */

/* Sorted numbers, for a log line that reads the same every time. */
static int
cmp_gid(const void *a, const void *b)
{
	gid_t x = *(const gid_t *)a, y = *(const gid_t *)b;

	return x < y ? -1 : x > y;
}

/* Once per worker: who it runs as, as the kernel sees it now. */
void
credentials_log(void)
{
	int n = getgroups(0, NULL);
	_cleanup_free_ gid_t *groups = malloc(sizeof(gid_t) * (size_t)MAX(n, 1));
	char list[1024] = "";
	size_t len = 0;
	uid_t uid = getuid();
	gid_t gid = getgid();
	const struct passwd *pw = getpwuid(uid);
	const struct group *gr = getgrgid(gid);
	char uname[64] = "", gname[64] = "";

	n = groups ? getgroups(n, groups) : -1;
	if (n < 0)
		n = 0;
	qsort(groups, (size_t)n, sizeof(gid_t), cmp_gid);
	for (int i = 0; i < n && len < sizeof(list); i++)
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%u", i ? "," : "",
					(unsigned)groups[i]);
	if (pw)
		snprintf(uname, sizeof(uname), "(%s)", pw->pw_name);
	if (gr)
		snprintf(gname, sizeof(gname), "(%s)", gr->gr_name);
	log_info("running as uid=%u%s gid=%u%s groups=%s", (unsigned)uid, uname, (unsigned)gid,
		 gname, list);
}

/* No capability may survive the switch away from root (the kernel clears them: check). */
static bool
capabilities_left(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = { 0 };

	if (syscall(SYS_capget, &h, d) < 0)
		return true;
	for (size_t i = 0; i < ELEMENTSOF(d); i++)
		if (d[i].effective || d[i].permitted)
			return true;
	return false;
}

/*
 * The group set that goes with user: its primary group (or group, if given)
 * and its supplementary groups, as initgroups() reads them; exactly gid when
 * passwd does not know the user.
 */
static void
set_groups(uid_t user, gid_t group)
{
	const struct passwd *pw = getpwuid(user);
	gid_t gid = group != (gid_t)-1 ? group : pw ? pw->pw_gid : (gid_t)-1;

	if (gid == (gid_t)-1)
		fatalx("user %u has no passwd entry to take its group from; set group too",
		       (unsigned)user);
	if ((pw ? initgroups(pw->pw_name, gid) : setgroups(1, &gid)) < 0)
		fatalx("setting the groups of uid %u: %s", (unsigned)user, strerror(errno));
	if (setresgid(gid, gid, gid) < 0)
		fatalx("setgid %u: %s", (unsigned)gid, strerror(errno));
}

/*
 * Workers need no privilege after the master bound the sockets, and the
 * process that checks a pool's plugins needs none at all: drop to the pool's
 * user for good, and prove that it cannot be regained.  user
 * brings its own groups unless group is given; group alone (which the config
 * should refuse) changes only the groups and says so.
 */
void
credentials_drop(const struct config_pool *c)
{
	if (geteuid() != 0 || (c->user == (uid_t)-1 && c->group == (gid_t)-1))
		return;
	if (c->user == (uid_t)-1) {
		if (setgroups(1, &c->group) < 0 || setresgid(c->group, c->group, c->group) < 0)
			fatalx("setgid %u: %s", (unsigned)c->group, strerror(errno));
		log_warning("group without user: only the group changed, still uid 0");
		return;
	}
	set_groups(c->user, c->group);
	if (setresuid(c->user, c->user, c->user) < 0)
		fatalx("setuid %u: %s", (unsigned)c->user, strerror(errno));
	if (c->user == 0)
		return;
	/* Nor through an exec: no set-user-ID binary or file capability lifts us again. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fatalx("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	if (setuid(0) == 0 || seteuid(0) == 0 || capabilities_left())
		fatalx("could regain root after dropping privileges");
}
