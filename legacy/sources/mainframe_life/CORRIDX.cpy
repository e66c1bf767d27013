000100*================================================================ CORRIDX
000200* CORRIDX   CORRESPONDENCE INDEX (IMAGED DOCUMENTS)               CORRIDX
000300*           RECFM=FB, LRECL=40, KEY POL-NUMBER + DOC-ID           CORRIDX
000400*================================================================ CORRIDX
000500 01  CORRIDX-REC.                                                 CORRIDX
000600     05  POL-NUMBER              PIC X(10).                       CORRIDX
000700     05  DOC-ID                  PIC X(12).                       CORRIDX
000800     05  DOC-TYPE                PIC X(04).                       CORRIDX
000900     05  DOC-DATE                PIC 9(08).                       CORRIDX
001000     05  DOC-CHANNEL             PIC X(01).                       CORRIDX
001100         88  DOC-MAIL                      VALUE 'M'.             CORRIDX
001200         88  DOC-EMAIL                     VALUE 'E'.             CORRIDX
001300         88  DOC-PORTAL                    VALUE 'P'.             CORRIDX
001400     05  FILLER                  PIC X(05).                       CORRIDX
