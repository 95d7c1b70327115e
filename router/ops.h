/*
 * ops.h - operations glue (stub until wired into the router).
 */
#ifndef TURNOUT_OPS_H
#define TURNOUT_OPS_H
#endif
