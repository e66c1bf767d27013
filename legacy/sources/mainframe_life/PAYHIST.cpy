000100*================================================================ PAYHIST
000200* PAYHIST   PREMIUM PAYMENT HISTORY                               PAYHIST
000300*           RECFM=FB, LRECL=40, KEY POL-NUMBER + PAY-SEQ          PAYHIST
000400*================================================================ PAYHIST
000500 01  PAYHIST-REC.                                                 PAYHIST
000600     05  POL-NUMBER              PIC X(10).                       PAYHIST
000700     05  PAY-SEQ                 PIC 9(03).                       PAYHIST
000800     05  PAY-DATE                PIC 9(08).                       PAYHIST
000900     05  PAY-AMOUNT              PIC S9(7)V99  COMP-3.            PAYHIST
001000     05  PAY-METHOD              PIC X(03).                       PAYHIST
001100     05  PAY-STATUS              PIC X(02).                       PAYHIST
001200         88  PAY-POSTED                    VALUE 'PD'.            PAYHIST
001300         88  PAY-REVERSED                  VALUE 'RV'.            PAYHIST
001400         88  PAY-NSF                       VALUE 'NS'.            PAYHIST
001500     05  FILLER                  PIC X(09).                       PAYHIST
