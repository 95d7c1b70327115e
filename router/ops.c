/*
 * ops.c - operations glue: admin commands, reload, rollback (stub until wired).
 */
#include "ops.h"
