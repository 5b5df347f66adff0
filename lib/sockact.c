/* SPDX-License-Identifier: MIT */
#include <string.h>
#include <systemd/sd-daemon.h>

#include "fd-util.h"
#include "sockact.h"

int
sockact_take(struct sockact_fd **ret, size_t *ret_n)
{
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);

	if (n <= 0) {
		*ret = NULL;
		*ret_n = 0;
		return n;
	}
	struct sockact_fd *fds = calloc((size_t)n, sizeof(*fds));
	for (int i = 0; i < n; i++) {
		if (fds) {
			fds[i].fd = SD_LISTEN_FDS_START + i;
			fds[i].name = names && names[i] ? names[i] : strdup("unknown");
		} else if (names) {
			free(names[i]);
		}
		/* Everything we hold must not leak into a service's exec(). */
		fd_set_cloexec(SD_LISTEN_FDS_START + i, true);
	}
	free(names);
	if (!fds)
		return -ENOMEM;
	*ret = fds;
	*ret_n = (size_t)n;
	return n;
}

void
sockact_free(struct sockact_fd *fds, size_t n)
{
	for (size_t i = 0; fds && i < n; i++) {
		if (!fds[i].used)
			safe_close(fds[i].fd);
		free(fds[i].name);
	}
	free(fds);
}
