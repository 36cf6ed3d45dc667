/*
 * proven-host backup|restore ADDR FILE: a running guest's sealed backup
 * copied out over the control channel, or one handed in before the guest
 * is initialized (run --restore FILE does that itself).  The file is
 * provend's sealed backup (daemon/core/backup.h): it authenticates itself
 * chunk by chunk, so the stream around it needs no protection of its own;
 * what the host could change it changes for nothing but a refusal.
 *
 *   backup              {"bytes", ...} then {"data": bytes} frames, exactly
 *                       bytes of them (proven_conn_recv_data)
 *   restore {"bytes"}   followed by the data frames; one answer at the end
 */

#ifndef PROVEN_HOST_BACKUP_H
#define PROVEN_HOST_BACKUP_H


#define HOST_UNREACHABLE      3   /* no agent answered: try again later */
#define HOST_HANDED_ALREADY   4   /* restore: the guest has one ("exists") */

/* The exit status, failures said on stderr (quiet: not the connect's). */
int host_backup(const char *control, const char *file);
int host_restore(const char *control, const char *file, int quiet);

#endif /* PROVEN_HOST_BACKUP_H */
